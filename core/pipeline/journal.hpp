#pragma once

// The journal: where every record is made durable before its source is
// acknowledged, classified, routed, minimised per destination and queued in
// each destination's outbox — all in one transaction, group-committed.
//
// One thread writes the store. Everything that changes it (sources emitting,
// delivery progress, the retention sweeper, erase tasks) is handed to that
// thread as a request, and all requests that are waiting go into one
// transaction with one fsync: the acknowledgement of a source waits for it.
// Audit entries go with the transaction that makes them: they are written
// to the audit file (and fsynced) just before it commits, and it commits the
// head of the chain they reach; at start, entries past the committed head
// (a crash between the two) are taken out again. So a record and the entries
// that describe it are kept together or not at all.

#include "audit/audit_log.hpp"
#include "config/config.hpp"
#include "pipeline/policy.hpp"
#include "plugin/instance.hpp"
#include "store/codec.hpp"
#include "store/store.hpp"
#include "util/shared_text.hpp"

#include <switchboard/detail/record_data.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace switchboard::pipeline {

using Clock = std::function<std::int64_t()>; // Unix ms

// How long records are kept, from config: [[retention.policy]] (source and/or
// category), a source instance's `retention`, then retention.default.
class RetentionRules {
public:
    explicit RetentionRules(const config::Config& config);
    RetentionRules() = default;
    std::int64_t period_ms(std::string_view source, std::string_view category) const;

private:
    struct Rule {
        std::string source, category;
        std::int64_t ms;
    };
    std::vector<Rule> rules_;
    std::map<std::string, std::int64_t, std::less<>> by_source_;
    std::int64_t default_ms_ = 28LL * 86'400'000;
};

// The head of the audit chain that the store's last transaction with audit
// entries committed (meta audit_head, "<seq> <hash>"); nullopt before the
// first. Throws store::StoreError when it is malformed.
std::optional<audit::Head> committed_audit_head(store::Store& store);

// A record id names where the record is kept: "R<chunk>-<index>".
std::string record_id(std::int64_t chunk, std::uint32_t index);
// The same into `out`, reusing its buffer.
void assign_record_id(std::string& out, std::int64_t chunk, std::uint32_t index);
bool parse_record_id(std::string_view id, std::int64_t& chunk, std::uint32_t& index);

// What an outbox entry stores in place of its minimised copy: the copy is
// made again from the record in its chunk, by the profile of this
// fingerprint, with the route's lawful basis, at the time it was routed
// (age bands are dated by it). See Journal::rebuild.
struct EntryRef {
    std::string fingerprint;
    bool lawful_basis = false;
    std::int64_t routed_at = 0; // Unix ms
};

// One minimised record for one destination, as its worker receives it.
struct OutboxEntry {
    std::uint64_t seq = 0;
    std::string record_id;
    std::int64_t chunk = 0;
    std::uint32_t index = 0;
    std::int64_t expires_at = 0;
    // Shared texts: made once per route, not once per entry (and freed by
    // nobody, on the worker's thread or any other).
    util::SharedText purpose;
    util::SharedText profile;
    std::uint32_t profile_version = 1;
    // How the copy was made, as the entry's outbox row holds it (EntryRef):
    // a copy rendered as JSON (sb_record::is_rendered), which has no tree
    // to store, is dead-lettered as this reference.
    util::SharedText fingerprint;
    bool lawful_basis = false;
    std::int64_t routed_at = 0;
    std::shared_ptr<sb_record> record;
    // Set instead of `record` when the copy could not be made again from the
    // store (Journal::rebuild): the reference and why. The worker
    // dead-letters the entry with that reason, keeping the reference.
    struct Unbuilt {
        EntryRef ref;
        std::string why;
    };
    std::shared_ptr<const Unbuilt> unbuilt;
};

// What erasure on request (RetentionService) leaves in place of an erased
// record: record ids are positions in their chunk (and in outbox rows), so
// the record is replaced, not removed. A tombstone in a chunk keeps the id
// and the expiry, and the category kErasedCategory; an outbox entry keeps
// its place with the profile kErasedProfile and an empty record. Neither
// carries anything about the person.
inline constexpr const char* kErasedCategory = "[erased]";
inline constexpr const char* kErasedProfile = "[erased]";
bool is_tombstone(const sb_record& record);
sb_record tombstone(const std::string& id, const std::string& expires_at);

// Implemented by a destination's delivery worker: new entries, straight from
// a commit. A worker that is behind may decline (it reads the store instead),
// which keeps memory flat whatever the backlog.
class OutboxListener {
public:
    virtual ~OutboxListener() = default;
    virtual void offer(std::vector<OutboxEntry>&& entries) = 0;
    // False while offers would be declined (the worker is behind): the
    // journal then makes no copies for it (it offers entries without them).
    virtual bool wants_copies() const { return true; }
    // True when the destination reads records as JSON only
    // (SB_CAP_JSON_RECORDS): its copies are then rendered where they are
    // made (sb::detail::render_record), and no tree of fields is handed on.
    virtual bool wants_json() const { return false; }
    // SB_PENDING completions reported by the plugin through host->complete.
    virtual void complete(std::uint64_t id, sb_status status, const char* receipt) = 0;
};

class Journal : public plugin::RecordSink {
public:
    struct Options {
        std::size_t max_group = 8192;      // records per transaction at most
        std::int64_t quarantine_ms = 28LL * 86'400'000;
        // Bodies of chunks kept read for rebuild(), in bytes: enough that
        // destinations draining a backlog together mostly find a chunk
        // already read by another (they move through it at different speeds).
        std::size_t chunk_cache_bytes = 32u << 20;
        // Threads that help an emitting thread prepare a large batch (see
        // prepare()): with one, a busy source uses a second core for its
        // classification, profiles and encoding. 0: the emitting thread
        // prepares alone. The daemon gives [node] prepare_helpers, or
        // default_prepare_helpers().
        unsigned prepare_helpers = 1;
        // How long a lazy write (submit_lazy) waits at most for another
        // commit to join.
        std::int64_t lazy_ms = 20;
    };

    // One helper on a machine of more than two CPUs, none on two or fewer:
    // there the writer and the delivery workers already share the second
    // core, and a helper took CPU from them, and more of it (its records
    // were made on the other core), for a few per cent of throughput
    // (docs/performance.md, fifteenth session).
    static unsigned default_prepare_helpers(unsigned cpus = std::thread::hardware_concurrency()) {
        return cpus > 2 ? 1 : 0;
    }

    Journal(store::Store& store, audit::AuditLog& audit, const Policy& policy,
            RetentionRules retention, Clock clock, plugin::Metrics* metrics, Options options);
    ~Journal() override;

    // Repairs the audit trail's tail against the store (entries of a
    // transaction that did not commit are set aside), then starts the writer
    // thread.
    void start();
    // Commits what is queued, stops the thread.
    void stop();

    void attach(const std::string& destination, OutboxListener* listener);
    // Transform instances, applied in order to every record before it is
    // classified (SB_ERR_INVALID from one refuses the record).
    void add_transform(plugin::Instance* transform);
    void attach_completion(const std::string& instance, OutboxListener* listener);
    // Where completions of erase requests (ids with the top bit set) go.
    using EraseCompletion = std::function<void(const std::string& instance, std::uint64_t id,
                                               sb_status status, const char* receipt)>;
    void on_erase_completion(EraseCompletion fn);

    // A change to the store from another component. `apply` runs on the
    // writer thread inside the group transaction (it may append audit
    // entries); `done` runs after the commit (true) or its failure (false).
    struct Write {
        std::function<void(store::Txn&, audit::AuditLog&)> apply;
        std::function<void(bool ok)> done;
    };
    void submit(Write write);
    // A write that may wait (Options::lazy_ms at most) to share the commit
    // of the next ingest or other write, instead of a commit (two fsyncs)
    // of its own: for what only records progress that is safe to lose in
    // a crash, such as a destination's acknowledgements (lost, the records
    // are delivered again: at least once).
    void submit_lazy(Write write);
    // Submits and waits for the commit; false if it failed.
    bool submit_and_wait(std::function<void(store::Txn&, audit::AuditLog&)> apply);

    // plugin::RecordSink
    sb_status emit(const std::string& instance, std::vector<std::unique_ptr<sb_record>>& records,
                   const char* state_key, const char* state_value, sb_status* results,
                   std::string& error) override;
    // Queues the batch and prepares it (on this thread and a helper), then
    // returns: the writer commits it meanwhile. With `after` (a batch of the
    // same instance begun before, not yet waited for), the writer stores it
    // only if that one was stored.
    std::shared_ptr<plugin::Emission> begin(const std::string& instance,
                                            std::vector<std::unique_ptr<sb_record>>& records,
                                            const char* state_key, const char* state_value,
                                            const std::shared_ptr<plugin::Emission>& after) override;
    sb_status wait(plugin::Emission& emission, sb_status* results,
                   std::vector<std::unique_ptr<sb_record>>& records, std::string& error) override;
    sb_status quarantine(const std::string& instance, std::string_view bytes,
                         const std::string& reason, const std::string& ref) override;
    std::optional<std::string> state_get(const std::string& instance, const std::string& key) override;
    sb_status state_set(const std::string& instance, const std::string& key, const char* value) override;
    void complete(const std::string& instance, std::uint64_t id, sb_status status,
                  const char* receipt) override;

    // Returns once what was queued before is committed, with its audit
    // entries in the file (tests, `audit verify` on a live node).
    void flush_audit();

    // Records erased on request while this node runs (RetentionService):
    // delivery workers hand none of them over, and dead-letter none, even
    // if they read the entry before it was erased in the store.
    void mark_erased(const std::vector<std::string>& record_ids);
    bool erased(const std::string& record_id) const;

    // Makes the copy of an entry stored by reference (`ref`) again: the
    // record from its chunk, minimised by the profile of ref.fingerprint
    // (the config's, or one the journal kept from an earlier config), with
    // the route's lawful basis, dated ref.routed_at; the id is the record's.
    // A record erased on request gives its tombstone with the profile
    // kErasedProfile; otherwise, when it cannot be made, e.unbuilt says why.
    // `cache` holds the caller's last chunk: entries of one chunk come in
    // runs. Chunks are read through a small cache that the destinations
    // share (they read the same chunks when draining a backlog together).
    class Chunk {
    public:
        // Copies `bytes` into pages of its own, given back to the system
        // when the chunk goes: cached bodies come and go by the thousand, and
        // kept on the heap among small blocks they left it fragmented (RSS
        // growing while a backlog drained).
        explicit Chunk(std::size_t size); // to be filled through data()
        ~Chunk();
        Chunk(const Chunk&) = delete;
        Chunk& operator=(const Chunk&) = delete;
        std::string_view body() const { return {data_, size_}; }
        char* data() { return data_; }
        std::vector<std::size_t> offsets; // of each record in body()
        store::ChunkHeads table;          // its table of heads (format 2)

    private:
        char* data_ = nullptr;
        std::size_t size_ = 0;
    };
    struct ChunkCache {
        std::int64_t id = -1;
        std::shared_ptr<const Chunk> chunk; // null: not in the store
    };
    // `reuse`: a spent copy (no one else holding it) to make the new one in,
    // its buffers kept (RecordData::recycle); else a new record is made.
    void rebuild(OutboxEntry& e, const EntryRef& ref, ChunkCache& cache,
                 std::shared_ptr<sb_record> reuse = nullptr);
    // The profile of a fingerprint; null with `why` when neither the config
    // has it nor the journal kept its definition, or it cannot be compiled
    // again as it was (its hash key is no longer configured).
    const Profile* profile_by_fingerprint(const std::string& fingerprint, std::string& why);

    store::Store& store() { return store_; }
    const Policy& policy() const { return policy_; }
    std::int64_t now() const { return clock_(); }
    std::uint64_t committed_records() const;

private:
    // One record made ready on the emitting thread (see prepare()): all but
    // what depends on the commit (its id, seqs, duplicate check).
    struct Prepared {
        bool accepted = false; // else refused (Ingest::results says why)
        std::int64_t expires = 0;
        std::uint32_t cards = 0;
        // The record's external id (in the record), or null: the writer
        // looks here, not into the record, which another core prepared.
        const std::string* external = nullptr;
        // The ingest audit entry: its own detail (expires), and the
        // attributes it shares with the records of its source, channel,
        // category, rule and number of fields (ingest_shared).
        std::string ingest_detail;
        std::shared_ptr<const std::string> ingest_common;
        store::PreEncoded body;       // the record as stored, without its id
        struct Copy {                 // one per route with a profile
            const Route* route = nullptr;
            // Minimised, without its id; null when the destination's
            // worker was behind (Ingest::deferred): it makes the copy again
            // from the store, so none is made here.
            std::shared_ptr<sb_record> record;
            // The disclose detail after destination and seq; shared by
            // the copies of one shape on one route (disclose_tail).
            std::shared_ptr<const std::string> detail_tail;
        };
        std::vector<Copy> copies;
        // As new, but for its buffers (up to 64 KiB of encoding).
        void reset() {
            accepted = false;
            expires = 0;
            cards = 0;
            external = nullptr;
            ingest_detail.clear();
            ingest_common.reset();
            body.clear(64u << 10);
            copies.clear();
        }
    };
    // Prepared records a thread keeps for its next batch at most (emit()).
    static constexpr std::size_t kMaxKeptPrepared = 8192;
    struct Flight;
    struct Ingest {
        // The batch begun before this one and not waited for when this one
        // was begun (RecordSink::begin's `after`): this one is stored only
        // if that one was. Let go once this one is settled.
        std::shared_ptr<Flight> after;
        std::string instance;
        std::vector<std::unique_ptr<sb_record>>* records;
        const char* state_key;
        const char* state_value;
        sb_status* results;
        sb_status status = SB_ERR_UNAVAILABLE;
        std::string error;
        bool done = false;
        std::int64_t now = 0;
        // Destinations whose workers were behind when the batch came (they
        // decline what is offered, reading the store instead): their copies
        // are not made, only decided for the audit (Profile::sent_summary).
        std::vector<std::string> deferred;
        // Destinations whose copies are rendered (OutboxListener::wants_json).
        std::vector<std::string> rendered;
        // One per record, filled a slice (kSlice records) at a time by the
        // emitting thread and the helpers, while the writer already stores
        // the slices ready before them. Sized up front: never reallocated.
        // Guarded by the journal's mutex_: `ready` (records [0, ready) are
        // prepared), `slice_done`, `prepared_all`, `failure` and the
        // refusal counts.
        std::vector<Prepared> prepared;
        std::vector<char> slice_done;
        std::size_t slices = 0, slices_done = 0;
        std::atomic<std::size_t> next_slice{0}; // the next slice a thread takes
        std::size_t ready = 0;
        bool prepared_all = false;
        std::exception_ptr failure; // what failed preparing, on whichever thread: the group fails
        std::uint64_t refused = 0, refused_empty = 0, refused_expired = 0;
        // Guarded by help_mutex_: helpers working on it now.
        unsigned helpers = 0;
    };
    // A batch from begin() until wait(): the ingest and what it points to.
    struct Flight : plugin::Emission {
        Ingest in;
        std::vector<std::unique_ptr<sb_record>> records;
        std::vector<sb_status> results;
        std::string state_key, state_value;
    };
    struct Pending {
        Ingest* ingest = nullptr; // or
        Write write;
        bool lazy = false;
        std::shared_ptr<Flight> flight; // the ingest's, kept until it is settled
    };

    void run();
    static std::vector<Prepared>& spare_prepared();
    void enqueue_write(Write write, bool lazy);
    void commit_group(std::vector<Pending>& group);
    // CPU work of an ingest, on the emitting thread, outside the store's
    // transaction: checks, transforms, card redaction, classification,
    // routing, minimisation, encoding, audit details. It publishes its
    // progress a slice at a time, and the writer stores each slice while the
    // next is prepared (the two overlap; the batch still commits as one).
    // Several threads may prepare one ingest: each takes the next slice
    // (prepare_slices) until none is left; the writer stores slices in
    // order as the prefix before them is done.
    void prepare_slices(Ingest& in, const std::vector<plugin::Instance*>& transforms);
    void prepare_range(Ingest& in, std::size_t from, std::size_t to,
                       const std::vector<plugin::Instance*>& transforms, std::uint64_t (&refused)[3]);
    void help();

    // The rest, on the writer thread inside the transaction: waits for each
    // slice, then stores it (its chunks, outbox rows and audit entries).
    void ingest(store::Txn& txn, Ingest& in, std::map<std::string, std::vector<OutboxEntry>>& out,
                std::map<std::string, std::uint64_t>& seqs, std::uint64_t& records);
    // A chunk of one expiry bucket, filled slice by slice, stored at the
    // end of the ingest (so that a batch makes chunks as large as before).
    struct OpenChunk {
        store::ChunkInfo info;
        // The body is written from where its pieces are: per record, its
        // head (to the id) in `heads`, up to heads_end, then its
        // PreEncoded::tail().
        std::string heads;
        std::vector<std::pair<std::size_t, const store::PreEncoded*>> records;
        // The chunk's table of heads (format 2): each shape's once, named
        // by index from its records.
        std::vector<std::shared_ptr<const std::string>> table;
        std::size_t last_heads = 0; // the entry the last record named
        std::uint64_t heads_index(const std::shared_ptr<const std::string>& h);
        // Its records (index in the batch, index in the chunk), in order:
        // their copies are given seqs once the whole batch is stored
        // (disclose_chunks), chunk by chunk, so that each destination's
        // entries in a chunk are consecutive and take one outbox row.
        std::vector<std::pair<std::uint32_t, std::uint32_t>> members;
        std::vector<store::OutboxRow> rows;
    };
    // `shape`: the copy's shape id when it has no attachments, else 0.
    static std::shared_ptr<const std::string> disclose_tail(const Route& route, std::uint64_t shape,
                                                            const std::string& summary);
    // An ingest entry's attributes but expires: the same for every record
    // of one source, channel, category, rule and count of fields (and of
    // attachments and card data redacted), and so written once per audit
    // file as a set (AuditLog::append_shared), like a disclosure's.
    static std::shared_ptr<const std::string> ingest_shared(const std::string& source, std::string_view channel,
                                                            const std::string& category, int rule,
                                                            std::size_t fields, std::size_t attachments,
                                                            std::uint32_t cards);
    void store_slice(store::Txn& txn, Ingest& in, std::size_t from, std::size_t to,
                     std::map<std::int64_t, OpenChunk>& chunks, std::uint64_t& count,
                     std::uint64_t& duplicates, std::uint64_t& cards, std::uint64_t& accepted);
    void disclose_chunks(Ingest& in, std::map<std::int64_t, OpenChunk>& chunks,
                         std::map<std::string, std::vector<OutboxEntry>>& out,
                         std::map<std::string, std::uint64_t>& seqs);

    store::Store& store_;
    audit::AuditLog& audit_;
    const Policy& policy_;
    RetentionRules retention_;
    Clock clock_;
    plugin::Metrics* metrics_;
    Options options_;

    std::mutex mutex_;
    std::condition_variable wake_;    // the writer: work or stop
    std::condition_variable settled_; // emitters: their ingest is done
    std::condition_variable progress_; // the writer: a slice of an ingest is prepared
    std::deque<Pending> queue_;
    std::size_t queued_records_ = 0;
    std::size_t queued_urgent_ = 0; // requests in queue_ that are not lazy
    std::chrono::steady_clock::time_point lazy_since_{}; // the oldest lazy write waiting (about)
    bool stopping_ = false;
    bool running_ = false; // the writer takes requests
    std::thread thread_;

    // Helpers (Options::prepare_helpers) and the ingests they may join.
    std::mutex help_mutex_;
    std::condition_variable help_wake_; // helpers: an ingest to join, or stop
    std::condition_variable help_left_; // emitters: a helper left their ingest
    std::deque<Ingest*> help_queue_;
    bool help_stopping_ = false;
    std::vector<std::thread> helpers_;

    std::mutex listeners_mutex_;
    std::map<std::string, OutboxListener*> listeners_;
    std::map<std::string, OutboxListener*> completions_;
    EraseCompletion erase_completion_;
    std::vector<plugin::Instance*> transforms_;
    std::mutex transform_mutex_; // transform hooks run one at a time, as before

    // Writer-thread state.
    std::map<std::string, std::uint64_t> next_seq_; // per destination: last seq used
    std::string failed_; // set: a commit failed after its audit entries were written
    std::atomic<std::uint64_t> committed_records_{0};

    // Profiles by fingerprint: the config's, and those compiled again from
    // definitions the journal kept (owned here); failures remembered too.
    std::mutex profiles_mutex_;
    std::map<std::string, const Profile*, std::less<>> by_fingerprint_;
    std::map<std::string, std::string, std::less<>> unknown_fingerprints_; // why
    std::vector<std::unique_ptr<Profile>> kept_profiles_;

    // Chunks read for rebuild(), bounded (Options::chunk_cache_bytes), the oldest read
    // going first. mark_erased() empties it before an erasure rewrites
    // chunks, and a worker still holding an old copy of one hands over no
    // erased record (erased()).
    std::shared_ptr<const Chunk> read_chunk(std::int64_t id);
    std::mutex chunks_mutex_;
    std::map<std::int64_t, std::shared_ptr<const Chunk>> chunks_;
    std::deque<std::int64_t> chunk_order_;
    std::size_t chunk_bytes_ = 0;

    mutable std::mutex erased_mutex_;
    std::set<std::string> erased_;
    std::atomic<bool> any_erased_{false}; // the fast path: nothing erased yet
};

} // namespace switchboard::pipeline
