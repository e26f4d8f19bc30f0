#pragma once

// The journal's storage: records (in chunks, one per group commit), the
// outbox of each destination, dead letters, quarantine, per-instance state,
// idempotency keys, erase tasks, and the audit chain's committed head.
//
// The interface is what the pipeline needs and nothing SQL-specific, so that
// a PostgreSQL backend (several nodes, one database) can implement it. The
// embedded default is SqliteStore, a file in the data directory, with the
// chunks' bodies in segment files beside it (chunk_files.hpp).
//
// Records are stored in chunks rather than one row per record: a row costs
// several microseconds in any database, and the pipeline's budget is ten
// microseconds per record in total. A chunk holds the records of one commit
// that expire at about the same time, so retention deletes whole chunks,
// found through an index on expiry: the cost is proportional to what
// expired, never a scan.

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::store {

class StoreError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct OutboxRow {
    std::string destination;
    std::uint64_t first_seq = 0;
    std::uint32_t count = 0;
    std::int64_t chunk = 0;      // journal chunk the entries come from
    std::int64_t expires_at = 0; // latest expiry of its entries
    std::string indexes;         // u32 little-endian record index per entry
    std::string payloads;        // encoded minimised records; empty once delivered
};

struct DeadLetter {
    std::int64_t id = 0;
    std::string destination;
    std::uint64_t seq = 0;
    std::string record_id;
    std::int64_t chunk = 0;
    std::int64_t expires_at = 0;
    std::int64_t dead_at = 0;
    std::uint32_t attempts = 0;
    std::string error;
    std::string payload; // the encoded minimised record
    bool retry = false;  // an operator asked for another attempt
};

struct QuarantineItem {
    std::int64_t id = 0;
    std::string instance;
    std::string ref;
    std::string reason;
    std::int64_t received_at = 0;
    std::int64_t expires_at = 0;
    std::string bytes;
};

enum class EraseTarget { Source = 1, Destination = 2 };

struct EraseTask {
    std::int64_t id = 0;
    std::string instance;
    EraseTarget target = EraseTarget::Source;
    int reason = 1;              // sb_erase_reason
    std::int64_t created_at = 0;
    std::int64_t next_at = 0;
    std::uint32_t attempts = 0;
    std::uint32_t done = 0;      // items confirmed so far (items are done in order)
    std::string items;           // encoded EraseItem list
    std::string last_error;
};

// One record to erase at a plugin: what the plugin needs to find its copy.
struct EraseItem {
    std::string record_id;
    std::string external_id;
    std::string subject_ref;
    std::string channel;
};

void encode_items(const std::vector<EraseItem>& items, std::string& out);
bool decode_items(std::string_view in, std::vector<EraseItem>& items);

// A legal hold: retention does not delete the records it names until it
// ends (by `hold end`, or at `until`). Set by the CLI (or the admin API)
// straight into the store; the node audits it at its next sweep (`audited`
// says what of it is in the audit trail), because only the node writes the
// hash-chained trail.
struct Hold {
    std::int64_t id = 0;
    std::string reason;          // free text: kept here, never in the audit trail
    std::string set_by;
    std::int64_t set_at = 0;
    std::int64_t until = 0;      // 0: until ended
    std::string sar;             // the subject access request that placed it, if one did
    std::int64_t ended_at = 0;   // 0: in force
    std::string ended_by;        // a name, or "expiry"
    int audited = 0;             // 0 nothing yet, 1 its setting, 2 its end too
    std::vector<std::string> records; // record ids (R<chunk>-<index>)
};

// A record kept by a hold in force.
struct HeldRecord {
    std::string record_id;
    std::int64_t chunk = 0;
    std::int64_t hold = 0;
    std::int64_t until = 0;
};

// An erasure on request (UK GDPR Art. 17): placed by `switchboard erase` or
// the admin API straight into the store, like a hold, and carried out by the
// node at its next pass (it alone writes the audit trail), through the same
// path as retention. Record ids only: nothing about the person is kept here.
struct ErasureRecord {
    std::string record_id;
    std::int64_t chunk = 0;
    std::string outcome; // "" until carried out; then "erased", "held" or "gone"
    std::string detail;  // erased: the instances asked to erase ("verint,revenues");
                         // held: the holds keeping it ("3,5"); gone: why
};

struct Erasure {
    std::int64_t id = 0;
    std::string requested_by;
    std::int64_t requested_at = 0;
    std::int64_t done_at = 0; // 0: not carried out yet
    std::vector<ErasureRecord> records;
};

struct ChunkInfo {
    std::int64_t id = 0;
    std::int64_t created_at = 0;
    std::int64_t expires_at = 0;
    std::uint32_t count = 0;
};

// One write transaction. Everything done through it commits atomically and
// durably (fsync) when the function given to Store::write returns.
class Txn {
public:
    virtual ~Txn() = default;
    // Claims an idempotency key; false if it is already held (a duplicate).
    virtual bool claim(std::uint64_t key_hash, std::int64_t expires_at) = 0;
    virtual std::int64_t next_chunk_id() = 0;
    virtual void put_chunk(const ChunkInfo& info, std::string_view body) = 0;
    // The same with the body given as the pieces it is made of, in order,
    // so that it need not be put together in memory first.
    virtual void put_chunk(const ChunkInfo& info, const std::vector<std::string_view>& pieces) {
        std::string body;
        for (std::string_view p : pieces) body.append(p);
        put_chunk(info, body);
    }
    virtual void replace_chunk_body(std::int64_t id, std::string_view body) = 0;
    virtual void delete_chunk(std::int64_t id) = 0;
    virtual void put_outbox(const OutboxRow& row) = 0;
    // Marks every entry up to `acked_seq` of `destination` done, and drops the
    // payloads of fully delivered rows (the minimised copies need not linger).
    virtual void set_acked(const std::string& destination, std::uint64_t acked_seq) = 0;
    virtual void delete_outbox_for_chunk(std::int64_t chunk) = 0;
    virtual void put_dead_letter(const DeadLetter& d) = 0;
    virtual void delete_dead_letter(std::int64_t id) = 0;
    // Asks the destination's worker to deliver a dead letter again.
    virtual bool request_retry(std::int64_t id) = 0;
    virtual void update_dead_letter(std::int64_t id, std::uint32_t attempts, const std::string& error) = 0;
    virtual void delete_dead_letters_for_chunk(std::int64_t chunk) = 0;
    virtual void set_state(const std::string& instance, const std::string& key,
                           const std::optional<std::string>& value) = 0;
    virtual void put_quarantine(const QuarantineItem& q) = 0;
    virtual void put_erase_task(const EraseTask& t) = 0;
    virtual void update_erase_task(const EraseTask& t) = 0;
    virtual void delete_erase_task(std::int64_t id) = 0;
    // The audit spool of stores written by earlier versions (audit lines
    // committed with their change, for the file later); the journal now
    // writes its entries to the file ahead of the commit and only reads
    // this (pending_audit) to recover and release it.
    virtual void delete_audit_upto(std::uint64_t last_seq) = 0;
    virtual void set_meta(const std::string& key, const std::string& value) = 0;
    // Deletes quarantine items and idempotency keys that expired; counts.
    virtual std::uint64_t expire_quarantine(std::int64_t now) = 0;
    virtual std::uint64_t expire_claims(std::int64_t now) = 0;
    // Holds (see Hold). put_hold assigns and returns the id; `chunks` gives
    // the chunk of each of hold.records, in the same order.
    virtual std::int64_t put_hold(const Hold& hold, const std::vector<std::int64_t>& chunks) = 0;
    // Ends a hold in force; false if there is none with that id.
    virtual bool end_hold(std::int64_t id, std::int64_t at, const std::string& by) = 0;
    virtual void set_hold_audited(std::int64_t id, int audited) = 0;
    // Forgets holds that ended before `ended_before` and are fully audited
    // (their reason is free text: it must not outlive its use); counts.
    virtual std::uint64_t purge_holds(std::int64_t ended_before) = 0;
    // Rewrites the payloads of one outbox row (an entry erased before delivery).
    virtual void replace_outbox_payloads(const std::string& destination, std::uint64_t first_seq,
                                         std::string_view payloads) = 0;
    // Erasures (see Erasure). put_erasure assigns and returns the id.
    virtual std::int64_t put_erasure(const Erasure& erasure) = 0;
    // Records what became of each record (outcome, detail) and marks it done.
    virtual void finish_erasure(const Erasure& erasure, std::int64_t done_at) = 0;
    // Forgets erasures carried out before `done_before`; counts.
    virtual std::uint64_t purge_erasures(std::int64_t done_before) = 0;
};

class Store {
public:
    virtual ~Store() = default;

    // Runs `fn` in one write transaction and commits it durably. If fn
    // throws, the transaction is rolled back and the exception propagates.
    // Throws StoreError when the store cannot commit.
    virtual void write(const std::function<void(Txn&)>& fn) = 0;

    // Makes sure deleted bytes do not linger in the store's files (for
    // SQLite: checkpoint and truncate the write-ahead log).
    virtual void scrub() = 0;

    // Reads (each a consistent snapshot on its own).
    virtual std::optional<std::string> state(const std::string& instance, const std::string& key) = 0;
    virtual std::optional<std::string> meta(const std::string& key) = 0;
    virtual std::optional<std::string> chunk_body(std::int64_t id) = 0;
    // The same, read straight into memory of the caller's: `buffer(size)`
    // gives where to put a body of `size` bytes (it may be asked again, if
    // the chunk changed meanwhile). False if there is no such chunk.
    virtual bool read_chunk_body(std::int64_t id, const std::function<char*(std::size_t)>& buffer) {
        auto body = chunk_body(id);
        if (!body) return false;
        if (!body->empty()) std::memcpy(buffer(body->size()), body->data(), body->size());
        else buffer(0);
        return true;
    }
    virtual std::optional<ChunkInfo> chunk_info(std::int64_t id) = 0;
    // Chunks expired at `now` that no hold in force at `now` keeps.
    virtual std::vector<ChunkInfo> expired_chunks(std::int64_t now, std::size_t limit) = 0;
    virtual std::vector<ChunkInfo> chunks_expiring_before(std::int64_t until, std::size_t limit) = 0;
    virtual std::uint64_t acked(const std::string& destination) = 0;
    virtual std::uint64_t last_seq(const std::string& destination) = 0;
    // Rows of `destination` that hold entries after `after_seq`, in order:
    // at most `limit` rows, and no more once they hold `max_entries` entries.
    virtual std::vector<OutboxRow> outbox_after(const std::string& destination, std::uint64_t after_seq,
                                                std::size_t limit, std::size_t max_entries = SIZE_MAX) = 0;
    virtual std::vector<OutboxRow> outbox_for_chunk(std::int64_t chunk) = 0;
    virtual std::vector<DeadLetter> dead_letters(const std::string& destination) = 0;
    virtual std::optional<DeadLetter> dead_letter(std::int64_t id) = 0;
    virtual std::vector<DeadLetter> retry_requested(const std::string& destination) = 0;
    virtual std::vector<std::uint64_t> dead_seqs_for_chunk(const std::string& destination,
                                                           std::int64_t chunk) = 0;
    virtual std::vector<QuarantineItem> quarantine(std::size_t limit) = 0;
    virtual std::vector<EraseTask> erase_tasks(std::int64_t due_before, std::size_t limit) = 0;
    virtual std::vector<std::pair<std::uint64_t, std::string>> pending_audit() = 0;
    virtual std::uint64_t count_outbox_pending(const std::string& destination) = 0;
    // Holds with their records: all, or only those in force at `now`
    // (not ended, `until` not reached) when `in_force_at` is given.
    virtual std::vector<Hold> holds(std::optional<std::int64_t> in_force_at) = 0;
    virtual std::optional<Hold> hold(std::int64_t id) = 0;
    // Records kept by holds in force at `now`.
    virtual std::vector<HeldRecord> held_records(std::int64_t now) = 0;
    // Whether a hold has audit entries to write at `now` (set, ended, or run
    // out), or ended before `purge_before` and can be forgotten: an index-free
    // look at the small holds table, so a sweep with nothing to do commits nothing.
    virtual bool holds_to_settle(std::int64_t now, std::int64_t purge_before) = 0;
    // Erasures not carried out yet, oldest first, with their records.
    virtual std::vector<Erasure> pending_erasures(std::size_t limit) = 0;
    // All erasures kept (newest first, at most `limit`), without their records.
    virtual std::vector<Erasure> erasures(std::size_t limit) = 0;
    virtual std::optional<Erasure> erasure(std::int64_t id) = 0;
};

// The embedded default: <data_dir>/journal.db, its chunk bodies in segment
// files of about `segment_bytes` each in <data_dir>/journal.db-chunks/.
inline constexpr std::uint64_t kSegmentBytes = 64ull << 20;
std::unique_ptr<Store> open_sqlite(const std::string& file, std::uint64_t segment_bytes = kSegmentBytes);

} // namespace switchboard::store
