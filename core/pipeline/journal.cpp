#include "pipeline/journal.hpp"

#include "log.hpp"
#include "pipeline/cards.hpp"
#include "pipeline/outbox_codec.hpp"
#include "store/codec.hpp"

#include <switchboard/detail/abi.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <deque>

#include <sys/mman.h>

namespace switchboard::pipeline {

namespace {

// Where the journal keeps profile definitions by fingerprint (its state
// table, under a name no plugin instance can have).
const std::string kProfilesState = "@profiles";


constexpr const char* kComponent = "journal";
constexpr std::int64_t kBucketMs = 60'000; // records expiring within a minute share a chunk
// Records an emitting thread prepares before the writer may store them
// (Journal::prepare): small enough for the two to overlap, large enough that
// a chunk holds many records.
constexpr std::size_t kSlice = 512;

int meta_idx(std::string_view key) { return sb::detail::meta_index(key); }
const int kMetaId = meta_idx("id");
const int kMetaSource = meta_idx("source");
const int kMetaReceived = meta_idx("received_at");
const int kMetaExpires = meta_idx("expires_at");
const int kMetaCategory = meta_idx("category");
const int kMetaChannel = meta_idx("channel");
const int kMetaOccurred = meta_idx("occurred_at");
const int kMetaExternal = meta_idx("external_id");

// FNV-1a over source and external id: the idempotency key.
std::uint64_t claim_key(std::string_view instance, std::string_view external_id) {
    std::uint64_t h = 1469598103934665603ULL;
    auto mix = [&](std::string_view s) {
        for (unsigned char c : s) {
            h ^= c;
            h *= 1099511628211ULL;
        }
    };
    mix(instance);
    mix(std::string_view("\0", 1));
    mix(external_id);
    return h & 0x7fffffffffffffffULL; // SQLite integers are signed
}

void put_u32(std::string& out, std::uint32_t v) {
    char b[4] = {static_cast<char>(v), static_cast<char>(v >> 8), static_cast<char>(v >> 16),
                 static_cast<char>(v >> 24)};
    out.append(b, 4);
}

void set_audit_head(store::Txn& txn, const audit::Head& head) {
    txn.set_meta("audit_head", std::to_string(head.seq) + " " + head.hash);
}

} // namespace

// --- RetentionRules -------------------------------------------------------

RetentionRules::RetentionRules(const config::Config& config) {
    default_ms_ = config.retention.default_ms;
    for (const auto& s : config.sources)
        if (s.retention_ms) by_source_[s.name] = *s.retention_ms;
    if (const auto* ret = config.root.get("retention"); ret && ret->is_table())
        if (const auto* policies = ret->as_table()->get("policy"); policies && policies->is_array())
            for (const auto& p : *policies->as_array()) {
                const toml::table* t = p.as_table();
                if (!t) continue;
                Rule r;
                r.source = t->get("source") && t->get("source")->is_string()
                               ? t->get("source")->as_string()->get()
                               : "";
                r.category = t->get("category") && t->get("category")->is_string()
                                 ? t->get("category")->as_string()->get()
                                 : "";
                auto* v = t->get("retention");
                auto ms = v && v->is_string() ? sb::detail::parse_duration(v->as_string()->get())
                                              : std::nullopt;
                if (!ms) continue;
                r.ms = *ms;
                rules_.push_back(std::move(r));
            }
    // Most specific first: source and category, then category, then source.
    std::stable_sort(rules_.begin(), rules_.end(), [](const Rule& a, const Rule& b) {
        auto rank = [](const Rule& r) { return (r.source.empty() ? 0 : 1) + (r.category.empty() ? 0 : 2); };
        return rank(a) > rank(b);
    });
}

std::int64_t RetentionRules::period_ms(std::string_view source, std::string_view category) const {
    for (const Rule& r : rules_)
        if ((r.source.empty() || r.source == source) && (r.category.empty() || r.category == category))
            return r.ms;
    if (auto it = by_source_.find(source); it != by_source_.end()) return it->second;
    return default_ms_;
}

// --- the audit head ---------------------------------------------------

std::optional<audit::Head> committed_audit_head(store::Store& store) {
    auto h = store.meta("audit_head");
    if (!h) return std::nullopt;
    auto space = h->find(' ');
    std::uint64_t seq = 0;
    if (space == std::string::npos ||
        std::from_chars(h->data(), h->data() + space, seq).ptr != h->data() + space)
        throw store::StoreError("the journal's audit head is malformed");
    return audit::Head{seq, h->substr(space + 1)};
}

// --- record ids -----------------------------------------------------------

void assign_record_id(std::string& out, std::int64_t chunk, std::uint32_t index) {
    if (chunk < 0) { // never made (chunk ids count from 1), but kept exact
        out = "R" + std::to_string(chunk) + "-" + std::to_string(index);
        return;
    }
    // Written in place, in a string whose buffer the caller reuses: made by
    // concatenation, the id took four strings, a move of each part, and
    // digits stored a byte at a time then copied with wider loads.
    auto digits = [](std::uint64_t v) {
        std::size_t n = 1;
        for (; v >= 10; v /= 10) ++n;
        return n;
    };
    const std::size_t a = digits(static_cast<std::uint64_t>(chunk)), b = digits(index);
    out.resize(a + b + 2);
    char* p = out.data();
    *p++ = 'R';
    std::to_chars(p, p + a, chunk);
    p += a;
    *p++ = '-';
    std::to_chars(p, p + b, index);
}

std::string record_id(std::int64_t chunk, std::uint32_t index) {
    std::string id;
    assign_record_id(id, chunk, index);
    return id;
}

bool parse_record_id(std::string_view id, std::int64_t& chunk, std::uint32_t& index) {
    if (id.size() < 4 || id[0] != 'R') return false;
    auto dash = id.find('-');
    if (dash == std::string_view::npos || dash < 2 || dash + 1 >= id.size()) return false;
    chunk = 0;
    index = 0;
    for (std::size_t i = 1; i < dash; ++i) {
        if (id[i] < '0' || id[i] > '9' || chunk > (INT64_MAX / 10)) return false;
        chunk = chunk * 10 + (id[i] - '0');
    }
    for (std::size_t i = dash + 1; i < id.size(); ++i) {
        if (id[i] < '0' || id[i] > '9' || index > 100000) return false;
        index = index * 10 + static_cast<std::uint32_t>(id[i] - '0');
    }
    return true;
}

// --- Journal --------------------------------------------------------------

Journal::Journal(store::Store& store, audit::AuditLog& audit, const Policy& policy,
                 RetentionRules retention, Clock clock, plugin::Metrics* metrics, Options options)
    : store_(store), audit_(audit), policy_(policy), retention_(std::move(retention)),
      clock_(std::move(clock)), metrics_(metrics), options_(options) {
    for (const auto& [name, profile] : policy_.profiles()) by_fingerprint_.emplace(profile.fingerprint(), &profile);
}

Journal::~Journal() { stop(); }

void Journal::start() {
    // Entries a store of an earlier version committed in its audit spool
    // but had not yet written to the file (a crash between the two): into
    // the file now, then the spool is released for good.
    for (auto& [last, lines] : store_.pending_audit())
        if (last > audit_.last_seq()) audit_.append_saved(lines);
    auto synced = audit_.sync();
    if (!synced.ok()) throw store::StoreError("cannot write the audit trail: " + synced.error.message());
    // Entries are written ahead of their transaction (commit_group): any
    // after the head the store committed belong to one that never did.
    if (auto head = committed_audit_head(store_))
        audit_.cut_after(*head);
    // Each profile's definition, kept by fingerprint (once), so that outbox
    // entries routed with it can be made again after the config changes.
    std::vector<const Profile*> unkept;
    for (const auto& [fingerprint, profile] : by_fingerprint_)
        if (!store_.state(kProfilesState, fingerprint)) unkept.push_back(profile);
    store_.write([&](store::Txn& t) {
        t.delete_audit_upto(static_cast<std::uint64_t>(INT64_MAX));
        set_audit_head(t, audit_.head());
        for (const Profile* p : unkept) t.set_state(kProfilesState, p->fingerprint(), p->definition());
    });
    for (const auto& d : policy_.destinations()) next_seq_[d] = store_.last_seq(d);
    {
        std::lock_guard lock(mutex_);
        stopping_ = false;
        running_ = true;
        failed_.clear();
    }
    thread_ = std::thread([this] { run(); });
    {
        std::lock_guard lock(help_mutex_);
        help_stopping_ = false;
    }
    for (unsigned k = 0; k < options_.prepare_helpers; ++k) helpers_.emplace_back([this] { help(); });
}

void Journal::stop() {
    {
        std::lock_guard lock(mutex_);
        if (!thread_.joinable()) return;
        stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
    {
        std::lock_guard lock(help_mutex_);
        help_stopping_ = true;
    }
    help_wake_.notify_all();
    for (std::thread& t : helpers_) t.join();
    helpers_.clear();
}

void Journal::attach(const std::string& destination, OutboxListener* listener) {
    std::lock_guard lock(listeners_mutex_);
    listeners_[destination] = listener;
}

void Journal::add_transform(plugin::Instance* transform) {
    std::lock_guard lock(listeners_mutex_);
    transforms_.push_back(transform);
}

void Journal::attach_completion(const std::string& instance, OutboxListener* listener) {
    std::lock_guard lock(listeners_mutex_);
    completions_[instance] = listener;
}

void Journal::flush_audit() {
    submit_and_wait([](store::Txn&, audit::AuditLog&) {});
}

std::uint64_t Journal::committed_records() const { return committed_records_.load(); }

void Journal::mark_erased(const std::vector<std::string>& record_ids) {
    if (record_ids.empty()) return;
    {
        // Their chunks are about to be rewritten: read them again.
        std::lock_guard lock(chunks_mutex_);
        chunks_.clear();
        chunk_order_.clear();
        chunk_bytes_ = 0;
    }
    std::lock_guard lock(erased_mutex_);
    erased_.insert(record_ids.begin(), record_ids.end());
    any_erased_ = true;
}

bool Journal::erased(const std::string& record_id) const {
    if (!any_erased_.load(std::memory_order_relaxed)) return false;
    std::lock_guard lock(erased_mutex_);
    return erased_.count(record_id) > 0;
}

const Profile* Journal::profile_by_fingerprint(const std::string& fingerprint, std::string& why) {
    std::lock_guard lock(profiles_mutex_);
    if (auto it = by_fingerprint_.find(fingerprint); it != by_fingerprint_.end()) return it->second;
    if (auto it = unknown_fingerprints_.find(fingerprint); it != unknown_fingerprints_.end()) {
        why = it->second;
        return nullptr;
    }
    auto fail = [&](std::string text) -> const Profile* {
        why = text;
        unknown_fingerprints_.emplace(fingerprint, std::move(text));
        return nullptr;
    };
    std::optional<std::string> kept;
    try {
        kept = store_.state(kProfilesState, fingerprint);
    } catch (const std::exception& e) {
        why = std::string("cannot read the profile's definition: ") + e.what(); // not remembered: may pass
        return nullptr;
    }
    if (!kept) return fail("its profile (fingerprint " + fingerprint + ") is not known to this journal");
    toml::table doc;
    try {
        doc = toml::parse(*kept);
    } catch (const toml::parse_error&) {
        return fail("the kept definition of its profile (fingerprint " + fingerprint + ") is unreadable");
    }
    const std::string name = doc["name"].value_or(std::string());
    const std::string key_fingerprint = doc["key_fingerprint"].value_or(std::string());
    const toml::table* table = doc["profile"].as_table();
    if (name.empty() || !table)
        return fail("the kept definition of its profile (fingerprint " + fingerprint + ") is incomplete");
    // The hash key is never kept: a configured profile with the same key lends it.
    const std::string* key = nullptr;
    if (!key_fingerprint.empty()) {
        for (const auto& [n, p] : policy_.profiles())
            if (p.key_fingerprint() == key_fingerprint) key = p.hash_key();
        if (!key)
            return fail("profile " + name + " has changed since it was routed, and the hash key it had is "
                        "no longer configured for any profile");
    }
    config::Diagnostics diagnostics;
    auto profile = std::make_unique<Profile>(Profile::compile(name, *table, key, diagnostics));
    if (diagnostics.has_errors() || profile->fingerprint() != fingerprint)
        return fail("the kept definition of profile " + name + " does not compile to the profile it was");
    const Profile* p = profile.get();
    kept_profiles_.push_back(std::move(profile));
    by_fingerprint_.emplace(fingerprint, p);
    log::Logger::get().write(log::Level::Info, kComponent, name,
                             "outbox entries routed before the profile changed are made with its earlier "
                             "definition (fingerprint " + fingerprint + ")");
    return p;
}

Journal::Chunk::Chunk(std::size_t size) : size_(size) {
    if (size_ == 0) return;
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    data_ = static_cast<char*>(p);
}

Journal::Chunk::~Chunk() {
    if (data_) ::munmap(data_, size_);
}

std::shared_ptr<const Journal::Chunk> Journal::read_chunk(std::int64_t id) {
    {
        std::lock_guard lock(chunks_mutex_);
        if (auto it = chunks_.find(id); it != chunks_.end()) return it->second;
    }
    std::shared_ptr<Chunk> chunk; // the body read straight into its pages
    if (!store_.read_chunk_body(id, [&](std::size_t size) {
            chunk = std::make_shared<Chunk>(size);
            return chunk->data();
        }))
        return nullptr;
    if (!chunk->table.read(chunk->body())) chunk->table = {}; // its records then read as unreadable
    for (std::size_t pos = chunk->table.first; pos < chunk->body().size();) {
        chunk->offsets.push_back(pos);
        if (!store::skip(chunk->body(), pos)) {
            chunk->offsets.pop_back();
            break;
        }
    }
    std::lock_guard lock(chunks_mutex_);
    // Another worker may have read it meanwhile: one copy is kept.
    if (auto [it, added] = chunks_.emplace(id, chunk); !added) return it->second;
    chunk_order_.push_back(id);
    chunk_bytes_ += chunk->body().size();
    while (chunk_order_.size() > 1 && chunk_bytes_ > options_.chunk_cache_bytes) {
        auto oldest = chunks_.find(chunk_order_.front());
        chunk_bytes_ -= oldest->second->body().size();
        chunks_.erase(oldest);
        chunk_order_.pop_front();
    }
    return chunk;
}

void Journal::rebuild(OutboxEntry& e, const EntryRef& ref, ChunkCache& cache, std::shared_ptr<sb_record> reuse) {
    e.record.reset();
    auto unbuilt = [&](std::string why) {
        e.unbuilt = std::make_shared<const OutboxEntry::Unbuilt>(OutboxEntry::Unbuilt{ref, std::move(why)});
    };
    if (cache.id != e.chunk) {
        cache.id = e.chunk;
        cache.chunk = read_chunk(e.chunk);
    }
    if (!cache.chunk) return unbuilt("its record is no longer in the journal");
    const Chunk& chunk = *cache.chunk;
    std::string why;
    const Profile* profile = profile_by_fingerprint(ref.fingerprint, why);
    // Only the leaves the profile has a rule for: the others it drops.
    const store::LeafFilter filter{[](const void* p, const sb::detail::PathAtom* path) {
                                       return static_cast<const Profile*>(p)->rule_for(path) != nullptr;
                                   },
                                   profile};
    sb_record record;
    std::size_t pos = e.index < chunk.offsets.size() ? chunk.offsets[e.index] : chunk.body().size();
    const std::string* id = nullptr;
    if (!store::decode(chunk.body(), pos, record, profile ? &filter : nullptr, &chunk.table) ||
        !(id = record.data.meta_at(kMetaId)) || *id != e.record_id)
        return unbuilt("its record (chunk " + std::to_string(e.chunk) + ", index " + std::to_string(e.index) +
                       ") is unreadable");
    if (is_tombstone(record)) {
        e.profile = kErasedProfile; // erased on request: not delivered
        e.record = std::make_shared<sb_record>(std::move(record));
        return;
    }
    if (!profile) return unbuilt(why);
    e.record = reuse && reuse.use_count() == 1 ? std::move(reuse) : std::make_shared<sb_record>();
    profile->apply(record, *e.record, ref.lawful_basis, ref.routed_at);
}

bool is_tombstone(const sb_record& record) {
    const std::string* category = record.data.meta_at(sb::detail::meta_index("category"));
    return category && *category == kErasedCategory && record.data.leaves().empty() &&
           record.data.attachments().empty();
}

sb_record tombstone(const std::string& id, const std::string& expires_at) {
    sb_record r;
    r.data.set_meta_at(sb::detail::meta_index("id"), id);
    if (!expires_at.empty()) r.data.set_meta_at(sb::detail::meta_index("expires_at"), expires_at);
    r.data.set_meta_at(sb::detail::meta_index("category"), kErasedCategory);
    return r;
}

void Journal::submit(Write write) { enqueue_write(std::move(write), false); }

void Journal::submit_lazy(Write write) { enqueue_write(std::move(write), true); }

void Journal::enqueue_write(Write write, bool lazy) {
    bool taken = false;
    {
        std::lock_guard lock(mutex_);
        if (running_) {
            const bool lazy_waiting = queue_.size() > queued_urgent_;
            if (lazy && !lazy_waiting) lazy_since_ = std::chrono::steady_clock::now();
            if (!lazy) ++queued_urgent_;
            queue_.push_back(Pending{nullptr, std::move(write), lazy, nullptr});
            taken = true;
        }
    }
    if (taken)
        wake_.notify_one();
    else if (write.done)
        write.done(false);
}

bool Journal::submit_and_wait(std::function<void(store::Txn&, audit::AuditLog&)> apply) {
    std::mutex m;
    std::condition_variable cv;
    bool finished = false, result = false;
    submit({std::move(apply), [&](bool ok) {
                std::lock_guard lock(m);
                result = ok;
                finished = true;
                cv.notify_all();
            }});
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return finished; });
    return result;
}

std::vector<Journal::Prepared>& Journal::spare_prepared() {
    // The last batch's on this thread, emptied: its buffers (encodings,
    // audit details) are filled again instead of allocated for every record.
    thread_local std::vector<Prepared> spare;
    return spare;
}

sb_status Journal::emit(const std::string& instance, std::vector<std::unique_ptr<sb_record>>& records,
                        const char* state_key, const char* state_value, sb_status* results,
                        std::string& error) {
    auto flight = begin(instance, records, state_key, state_value, nullptr);
    return wait(*flight, results, records, error);
}

std::shared_ptr<plugin::Emission> Journal::begin(const std::string& instance,
                                                 std::vector<std::unique_ptr<sb_record>>& records,
                                                 const char* state_key, const char* state_value,
                                                 const std::shared_ptr<plugin::Emission>& after) {
    auto flight = std::make_shared<Flight>();
    flight->records = std::move(records);
    records.clear();
    Ingest& in = flight->in;
    in.after = std::dynamic_pointer_cast<Flight>(after);
    in.instance = instance;
    in.records = &flight->records;
    if (state_key) flight->state_key = state_key;
    if (state_value) flight->state_value = state_value;
    in.state_key = state_key ? flight->state_key.c_str() : nullptr;
    in.state_value = state_value ? flight->state_value.c_str() : nullptr;
    const std::size_t n = flight->records.size();
    flight->results.assign(n, SB_OK);
    in.results = flight->results.data();
    in.now = clock_();
    in.prepared.swap(spare_prepared());
    for (Prepared& p : in.prepared) p.reset();
    in.prepared.resize(n);
    in.slices = (n + kSlice - 1) / kSlice;
    in.slice_done.assign(in.slices, 0);
    in.prepared_all = in.slices == 0;
    // Settled here, never queued: wait() returns at once.
    auto not_queued = [&](std::string error) {
        std::lock_guard lock(mutex_);
        in.status = SB_ERR_UNAVAILABLE;
        in.error = std::move(error);
        in.done = true;
        in.after.reset();
        return flight;
    };
    // Queued first, then prepared here, on the emitting thread (and by a
    // helper when the batch has several slices), a slice at a time: the
    // writer stores each slice (in the group's transaction) while the next
    // are prepared, and commits the batch as one. Not with transform
    // plugins: a hook that called back into the journal (state_set) would
    // wait for the writer, which waits for the hook; and hooks run one at a
    // time, so no helper joins either.
    std::vector<plugin::Instance*> transforms;
    {
        std::lock_guard lock(listeners_mutex_);
        transforms = transforms_;
        for (const auto& [dest, listener] : listeners_)
            if (listener && !listener->wants_copies()) in.deferred.push_back(dest);
            else if (listener && listener->wants_json()) in.rendered.push_back(dest);
    }
    const bool overlap = transforms.empty();
    auto enqueue = [&] {
        {
            std::unique_lock lock(mutex_);
            if (stopping_ || !running_) return false;
            queue_.push_back(Pending{&in, {}, false, flight});
            queued_records_ += n;
            ++queued_urgent_;
        }
        wake_.notify_one();
        return true;
    };
    if (overlap && !enqueue()) return not_queued("the journal is not running");
    const bool helped = overlap && in.slices > 1 && options_.prepare_helpers > 0;
    if (helped) {
        {
            std::lock_guard lock(help_mutex_);
            help_queue_.push_back(&in);
        }
        help_wake_.notify_one();
    }
    prepare_slices(in, transforms);
    if (helped) {
        // No slice is left to take; a helper may still be finishing one.
        std::unique_lock lock(help_mutex_);
        if (auto it = std::find(help_queue_.begin(), help_queue_.end(), &in); it != help_queue_.end())
            help_queue_.erase(it);
        help_left_.wait(lock, [&] { return in.helpers == 0; });
    }
    if (!overlap) {
        bool failed;
        {
            std::lock_guard lock(mutex_);
            failed = in.failure != nullptr; // wait() throws it
        }
        if (failed) return not_queued("");
        if (!enqueue()) return not_queued("the journal is not running");
    }
    return flight;
}

sb_status Journal::wait(plugin::Emission& emission, sb_status* results,
                        std::vector<std::unique_ptr<sb_record>>& records, std::string& error) {
    auto& flight = dynamic_cast<Flight&>(emission);
    Ingest& in = flight.in;
    std::exception_ptr failure;
    {
        std::unique_lock lock(mutex_);
        settled_.wait(lock, [&] { return in.done; });
        failure = in.failure; // the writer failed its group: nothing of it is kept
    }
    if (in.prepared.size() <= kMaxKeptPrepared) spare_prepared().swap(in.prepared);
    if (results) std::copy(flight.results.begin(), flight.results.end(), results);
    records = std::move(flight.records);
    flight.records.clear();
    if (failure) std::rethrow_exception(failure);
    if (in.status != SB_OK) error = in.error;
    return in.status;
}

void Journal::help() {
    std::unique_lock lock(help_mutex_);
    for (;;) {
        help_wake_.wait(lock, [&] { return help_stopping_ || !help_queue_.empty(); });
        if (help_stopping_) return;
        Ingest* in = help_queue_.front();
        help_queue_.pop_front();
        ++in->helpers;
        lock.unlock();
        prepare_slices(*in, {}); // (helped only without transforms)
        lock.lock();
        if (--in->helpers == 0) help_left_.notify_all(); // the emitter may return now
    }
}

sb_status Journal::quarantine(const std::string& instance, std::string_view bytes,
                              const std::string& reason, const std::string& ref) {
    store::QuarantineItem q;
    q.instance = instance;
    q.ref = ref;
    q.reason = reason;
    q.received_at = clock_();
    q.expires_at = q.received_at + options_.quarantine_ms;
    q.bytes = std::string(bytes.substr(0, 1 << 20)); // bounded: the evidence, not a denial of service
    bool ok = submit_and_wait([&](store::Txn& t, audit::AuditLog& audit) {
        t.put_quarantine(q);
        std::string detail;
        audit::append_attr(detail, "instance", instance);
        audit::append_attr(detail, "ref", ref);
        audit::append_attr(detail, "bytes", std::to_string(bytes.size()));
        audit.append(q.received_at, "quarantine", "", detail);
    });
    if (metrics_) metrics_->add(instance, "quarantined", 1);
    return ok ? SB_OK : SB_ERR_UNAVAILABLE;
}

std::optional<std::string> Journal::state_get(const std::string& instance, const std::string& key) {
    return store_.state(instance, key);
}

sb_status Journal::state_set(const std::string& instance, const std::string& key, const char* value) {
    std::optional<std::string> v;
    if (value) v = value;
    bool ok = submit_and_wait([&](store::Txn& t, audit::AuditLog&) { t.set_state(instance, key, v); });
    return ok ? SB_OK : SB_ERR_UNAVAILABLE;
}

void Journal::on_erase_completion(EraseCompletion fn) {
    std::lock_guard lock(listeners_mutex_);
    erase_completion_ = std::move(fn);
}

void Journal::complete(const std::string& instance, std::uint64_t id, sb_status status,
                       const char* receipt) {
    OutboxListener* l = nullptr;
    {
        std::lock_guard lock(listeners_mutex_);
        if ((id >> 63) && erase_completion_) {
            erase_completion_(instance, id, status, receipt);
            return;
        }
        auto it = completions_.find(instance);
        if (it != completions_.end()) l = it->second;
    }
    if (l) l->complete(id, status, receipt);
}

void Journal::run() {
    std::vector<Pending> group;
    const auto lazy_wait = std::chrono::milliseconds(options_.lazy_ms);
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            // Lazy writes alone wait (lazy_ms at most) for a request to
            // share their commit; anything else starts one at once.
            for (;;) {
                if (stopping_ || queued_urgent_ > 0) break;
                if (queue_.empty()) {
                    wake_.wait(lock);
                    continue;
                }
                if (wake_.wait_until(lock, lazy_since_ + lazy_wait) == std::cv_status::timeout &&
                    std::chrono::steady_clock::now() >= lazy_since_ + lazy_wait)
                    break;
            }
            if (queue_.empty() && stopping_) {
                running_ = false;
                return;
            }
            // Take what is waiting, up to max_group records (at least one request).
            std::size_t records = 0;
            while (!queue_.empty()) {
                Pending& p = queue_.front();
                std::size_t n = p.ingest ? p.ingest->records->size() : 0;
                if (!group.empty() && records + n > options_.max_group) break;
                records += n;
                if (!p.lazy) --queued_urgent_;
                group.push_back(std::move(p));
                queue_.pop_front();
            }
            queued_records_ -= records;
            // Lazy writes left behind (the group was full) wait again from now.
            if (queue_.size() > queued_urgent_) lazy_since_ = std::chrono::steady_clock::now();
        }
        if (!group.empty()) commit_group(group);
        group.clear();
    }
}

void Journal::commit_group(std::vector<Pending>& group) {
    std::map<std::string, std::vector<OutboxEntry>> outbox;
    std::map<std::string, std::uint64_t> seqs = next_seq_;
    std::uint64_t records = 0;
    audit::AuditLog::Mark mark = audit_.mark();
    std::string error = failed_;
    bool ok = error.empty(), written_ahead = false;
    if (ok) try { // (nothing is tried after a failure that needs a restart)
        store_.write([&](store::Txn& txn) {
            for (Pending& p : group) {
                if (p.ingest)
                    ingest(txn, *p.ingest, outbox, seqs, records);
                else if (p.write.apply)
                    p.write.apply(txn, audit_);
            }
            if (audit_.last_seq() == mark.head.seq) return;
            // Write-ahead: the entries reach the audit file (fsynced) before
            // the transaction they describe commits with the head they reach;
            // start() removes entries past that head after a crash between
            // the two. One file write and one fdatasync per group.
            set_audit_head(txn, audit_.head());
            written_ahead = true;
            auto synced = audit_.sync();
            if (!synced.ok()) throw store::StoreError("cannot write the audit trail: " + synced.error.message());
        });
    } catch (const std::exception& e) {
        ok = false;
        error = e.what();
        if (written_ahead) {
            // The file may hold entries of what did not commit; only a
            // restart (start(), cut_after) can take them out again. Until
            // then nothing more is committed, so that no entry chains after
            // them and nothing is acknowledged that the trail misdescribes.
            failed_ = "the journal stopped after a failed commit (" + error +
                      "); restart the node to repair the audit trail";
            log::error(kComponent, failed_);
        } else {
            audit_.rollback(mark);
            log::error(kComponent, std::string("commit failed; nothing of it was kept: ") + e.what());
        }
    }
    if (ok) {
        next_seq_ = std::move(seqs);
        committed_records_ += records;
    }
    // The sources first (they wait for this commit to go on reading), then
    // the workers: what is offered to them is the group's own.
    {
        std::lock_guard lock(mutex_);
        for (Pending& p : group) {
            if (!p.ingest) continue;
            if (!ok) {
                p.ingest->status = SB_ERR_UNAVAILABLE;
                p.ingest->error = "the journal could not commit: " + error;
            }
            p.ingest->done = true;
            p.ingest->after.reset(); // (the chain of batches in flight ends here)
        }
    }
    settled_.notify_all();
    if (ok) {
        std::lock_guard lock(listeners_mutex_);
        for (auto& [dest, entries] : outbox) {
            auto it = listeners_.find(dest);
            if (it != listeners_.end() && it->second) it->second->offer(std::move(entries));
        }
    }
    for (Pending& p : group)
        if (!p.ingest && p.write.done) p.write.done(ok);
}

void Journal::prepare_slices(Ingest& in, const std::vector<plugin::Instance*>& transforms) {
    const std::size_t size = in.prepared.size();
    for (;;) {
        const std::size_t k = in.next_slice.fetch_add(1);
        if (k >= in.slices) return;
        const std::size_t from = k * kSlice, to = std::min(size, from + kSlice);
        std::uint64_t refused[3] = {0, 0, 0}; // in all, empty, expired
        std::exception_ptr failure;
        try {
            prepare_range(in, from, to, transforms, refused);
        } catch (...) {
            failure = std::current_exception();
            in.next_slice = in.slices; // nobody takes another
        }
        {
            std::lock_guard lock(mutex_);
            in.refused += refused[0];
            in.refused_empty += refused[1];
            in.refused_expired += refused[2];
            in.slice_done[k] = 1;
            ++in.slices_done;
            while (in.ready < size && in.slice_done[in.ready / kSlice]) in.ready = std::min(size, in.ready + kSlice);
            if (failure && !in.failure) in.failure = failure;
            in.prepared_all = in.prepared_all || in.slices_done == in.slices || in.failure;
        }
        progress_.notify_all();
        if (failure) return;
    }
}

void Journal::prepare_range(Ingest& in, std::size_t from, std::size_t to,
                            const std::vector<plugin::Instance*>& transforms, std::uint64_t (&refused)[3]) {
    auto& records = *in.records;
    const std::int64_t now = in.now;
    const std::string received = sb::detail::format_time(now);
    Policy::Decision decision;
    std::string summary;
    for (std::size_t i = from; i < to; ++i) {
        sb_record* rec = records[i].get();
        // A batch is parsed whole before it is prepared: its records have
        // left the cache by then, and each stage began with a wait for its
        // first read of each value. So each record is fetched in three
        // steps, each one record ahead of the next: itself, its leaves, its
        // values.
        if (i + 3 < to && records[i + 3]) records[i + 3]->data.prefetch_self();
        if (i + 2 < to && records[i + 2]) records[i + 2]->data.prefetch_leaves();
        if (i + 1 < to && records[i + 1]) records[i + 1]->data.prefetch();
        sb_status& result = in.results[i];
        if (!rec || (rec->data.leaves().empty() && rec->data.attachments().empty())) {
            result = SB_ERR_INVALID;
            ++refused[0];
            ++refused[1];
            continue;
        }
        auto& data = rec->data;
        data.set_meta_at(kMetaSource, in.instance);
        data.set_meta_at(kMetaReceived, received);
        bool refused_by_transform = false;
        if (!transforms.empty()) {
            std::lock_guard lock(transform_mutex_);
            for (plugin::Instance* t : transforms) {
                std::string why;
                if (t->transform(rec, why) == SB_ERR_INVALID) {
                    log::Logger::get().write(log::Level::Warn, "journal", t->name(),
                                             "refused a record from " + in.instance + ": " + why);
                    refused_by_transform = true;
                    break;
                }
            }
        }
        if (refused_by_transform) {
            result = SB_ERR_INVALID;
            ++refused[0];
            continue;
        }
        // Card numbers never come to rest here, whatever the profiles say.
        // (Most were redacted as their source set them: redact_card_leaves
        // looks again only at leaves changed since.)
        const std::uint32_t cards = redact_card_leaves(data);
        policy_.decide(*rec, decision);
        const std::string& category = decision.classified.category;
        data.set_meta_at(kMetaCategory, category);
        // The clock starts at collection: the contact itself when known.
        std::int64_t collected = now;
        if (const std::string* occurred = data.meta_at(kMetaOccurred))
            if (auto t = sb::detail::parse_time(*occurred)) collected = std::min(now, *t);
        const std::int64_t expires = collected + retention_.period_ms(in.instance, category);
        if (expires <= now) {
            result = SB_ERR_INVALID; // already past its retention period: not taken
            ++refused[0];
            ++refused[2];
            continue;
        }
        const std::string expires_text = sb::detail::format_time(expires);
        data.set_meta_at(kMetaExpires, expires_text);
        result = SB_OK; // unless the writer finds it a duplicate

        Prepared& p = in.prepared[i];
        p.accepted = true;
        p.expires = expires;
        p.cards = cards;
        p.external = data.meta_at(kMetaExternal);
        audit::append_attr(p.ingest_detail, "expires", expires_text);
        const std::string* channel = data.meta_at(kMetaChannel);
        p.ingest_common = ingest_shared(in.instance, channel ? std::string_view(*channel) : "-", category,
                                        decision.classified.rule, data.leaves().size(),
                                        data.attachments().size(), cards);

        // The minimised copies; the record's id is added at commit (the
        // profile would copy it; nothing else depends on it).
        for (const Route* route : decision.routes) {
            if (!route->profile) continue;
            Prepared::Copy& c = p.copies.emplace_back();
            c.route = route;
            summary.clear();
            std::uint64_t shape = 0;
            auto among = [&](const std::vector<std::string>& dests) {
                return !dests.empty() && std::find(dests.begin(), dests.end(), route->destination) != dests.end();
            };
            if (among(in.deferred)) {
                shape = route->profile->sent_summary(*rec, route->has_lawful_basis(), now, summary);
            } else if (data.attachments().empty() && among(in.rendered)) {
                // Made in a copy this thread keeps (its buffers reused from
                // one record to the next), rendered while it is in the
                // cache, and handed on as its JSON and envelope.
                static thread_local sb_record scratch;
                route->profile->apply(*rec, scratch, route->has_lawful_basis(), now, nullptr, &summary);
                shape = scratch.data.shape_id();
                c.record = std::make_shared<sb_record>();
                sb::detail::render_record(scratch, *c.record);
            } else {
                c.record = std::make_shared<sb_record>();
                route->profile->apply(*rec, *c.record, route->has_lawful_basis(), now, nullptr, &summary);
                shape = data.attachments().empty() ? c.record->data.shape_id() : 0;
            }
            c.detail_tail = disclose_tail(*route, shape, summary);
        }
        p.body.assign(*rec);
    }
}

namespace {

std::uint64_t fnv_mix(std::uint64_t key, std::string_view part) {
    for (const char c : part) key = (key ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
    return (key ^ 0xff) * 0x100000001b3ull; // no two parts run into each other
}

} // namespace

std::shared_ptr<const std::string> Journal::ingest_shared(const std::string& source, std::string_view channel,
                                                         const std::string& category, int rule,
                                                         std::size_t fields, std::size_t attachments,
                                                         std::uint32_t cards) {
    struct Memo {
        std::string source, channel, category;
        int rule = 0;
        std::size_t fields = 0, attachments = 0;
        std::uint32_t cards = 0;
        std::shared_ptr<const std::string> shared;
    };
    std::uint64_t key = fnv_mix(fnv_mix(fnv_mix(0xcbf29ce484222325ull, source), channel), category);
    key ^= static_cast<std::uint64_t>(static_cast<std::uint32_t>(rule)) << 32 ^ fields ^ attachments << 20 ^
           std::uint64_t{cards} << 44;
    Memo& m = sb::detail::thread_memo_slot<Memo, 6>(key);
    if (m.shared && m.source == source && m.channel == channel && m.category == category && m.rule == rule &&
        m.fields == fields && m.attachments == attachments && m.cards == cards)
        return m.shared;
    std::string text;
    audit::append_attr(text, "source", source);
    audit::append_attr(text, "channel", channel);
    audit::append_attr(text, "category", category);
    audit::append_attr(text, "rule", rule >= 0 ? "classify.rule[" + std::to_string(rule) + "]" : "none");
    audit::append_attr(text, "fields", std::to_string(fields));
    if (attachments) audit::append_attr(text, "attachments", std::to_string(attachments));
    if (cards) audit::append_attr(text, "cards_redacted", std::to_string(cards));
    m = {source, std::string(channel), category, rule, fields, attachments, cards,
         std::make_shared<const std::string>(std::move(text))};
    return m.shared;
}

std::shared_ptr<const std::string> Journal::disclose_tail(const Route& route, std::uint64_t shape,
                                                         const std::string& summary) {
    auto build = [&] {
        std::string tail;
        tail.reserve(64 + summary.size() + route.label.size() + route.purpose.size());
        tail.push_back('-'); // so that append_attr puts ';' before the first
        audit::append_attr(tail, "purpose", route.purpose);
        audit::append_attr(tail, "profile", route.profile->name() + "@" + std::to_string(route.profile->version()));
        audit::append_attr(tail, "route", route.label);
        if (route.has_lawful_basis()) audit::append_attr(tail, "lawful_basis", route.lawful_basis);
        audit::append_attr(tail, "sent", summary.empty() ? std::string_view("-") : std::string_view(summary));
        tail.erase(0, 1);
        return std::make_shared<const std::string>(std::move(tail));
    };
    // The fields sent are those of the copy's shape (attachments aside):
    // every copy of one shape on one route has the same tail. A copy with
    // no shape (one that lost a value to a transform, or has attachments)
    // is found by its summary: most are the same as others.
    if (shape == 0) {
        struct ByText {
            const Route* route = nullptr;
            std::string summary;
            std::shared_ptr<const std::string> tail;
        };
        ByText& m = sb::detail::thread_memo_slot<ByText, 4>(fnv_mix(reinterpret_cast<std::uintptr_t>(&route), summary));
        if (!m.tail || m.route != &route || m.summary != summary) m = {&route, summary, build()};
        return m.tail;
    }
    struct Memo {
        const Route* route = nullptr;
        std::uint64_t shape = 0;
        std::shared_ptr<const std::string> tail;
    };
    Memo& m = sb::detail::thread_memo_slot<Memo, 6>((reinterpret_cast<std::uintptr_t>(&route) >> 4) ^ shape);
    if (m.route != &route || m.shape != shape) {
        m.route = &route;
        m.shape = shape;
        m.tail = build();
    }
    return m.tail;
}

void Journal::ingest(store::Txn& txn, Ingest& in, std::map<std::string, std::vector<OutboxEntry>>& out,
                     std::map<std::string, std::uint64_t>& seqs, std::uint64_t& count) {
    if (in.after && in.after->in.status != SB_OK) {
        // The batch begun before it was not stored (in this group or an
        // earlier one): neither is this one, so that the source can go
        // back to that one and read both again. (The writer alone sets a
        // queued ingest's status.)
        in.error = "not committed: a batch " + in.instance + " began before it was not";
        return;
    }
    std::uint64_t duplicates = 0, cards_total = 0, accepted = 0;
    std::map<std::int64_t, OpenChunk> chunks; // by expiry bucket
    for (std::size_t done = 0;;) {
        std::size_t upto = 0;
        bool all = false, failed = false;
        {
            std::unique_lock lock(mutex_);
            progress_.wait(lock, [&] { return in.ready > done || in.prepared_all; });
            upto = in.ready;
            all = in.prepared_all;
            failed = in.failure != nullptr;
        }
        if (failed) throw store::StoreError("records from " + in.instance + " could not be prepared");
        if (upto > done)
            store_slice(txn, in, done, upto, chunks, count, duplicates, cards_total, accepted);
        done = upto;
        if (all) break;
    }
    disclose_chunks(in, chunks, out, seqs);
    // Rows in seq order across the chunks: the store keeps each
    // destination's last seq from the row put last.
    std::vector<const store::OutboxRow*> rows;
    for (auto& [bucket, chunk] : chunks) {
        (void)bucket;
        std::vector<std::string_view> pieces;
        pieces.reserve(2 * chunk.records.size() + 1);
        std::vector<std::string_view> table;
        for (const auto& h : chunk.table) table.emplace_back(*h);
        std::string header;
        store::put_chunk_heads(table, header);
        pieces.emplace_back(header);
        std::size_t from = 0;
        for (const auto& [heads_end, body] : chunk.records) {
            pieces.emplace_back(chunk.heads.data() + from, heads_end - from);
            pieces.push_back(body->tail());
            from = heads_end;
        }
        txn.put_chunk(chunk.info, pieces);
        for (const store::OutboxRow& row : chunk.rows) rows.push_back(&row);
    }
    std::sort(rows.begin(), rows.end(),
              [](const store::OutboxRow* a, const store::OutboxRow* b) { return a->first_seq < b->first_seq; });
    for (const store::OutboxRow* row : rows) txn.put_outbox(*row);
    if (in.state_key) {
        std::optional<std::string> v;
        if (in.state_value) v = in.state_value;
        txn.set_state(in.instance, in.state_key, v);
    }
    in.status = SB_OK;
    const std::uint64_t refused_empty = in.refused_empty, refused_expired = in.refused_expired;
    if (refused_empty || refused_expired)
        log::Logger::get().write(
            log::Level::Warn, kComponent, in.instance,
            "refused " + std::to_string(refused_empty + refused_expired) + " record(s): " +
                (refused_empty ? std::to_string(refused_empty) + " empty (no fields, no attachments)" : "") +
                (refused_empty && refused_expired ? ", " : "") +
                (refused_expired ? std::to_string(refused_expired) +
                                       " already past their retention period when they arrived"
                                 : ""));
    if (metrics_) {
        if (accepted) metrics_->add(in.instance, "records_in", accepted);
        if (duplicates) metrics_->add(in.instance, "duplicates", duplicates);
        if (in.refused) metrics_->add(in.instance, "refused", in.refused);
        if (cards_total) metrics_->add(in.instance, "cards_redacted", cards_total);
    }
}

std::uint64_t Journal::OpenChunk::heads_index(const std::shared_ptr<const std::string>& h) {
    // Records come in runs of one shape; the preparing threads each have
    // their own copy of a shape's heads, the same bytes.
    if (last_heads < table.size() && (table[last_heads] == h || *table[last_heads] == *h)) return last_heads;
    for (std::size_t k = 0; k < table.size(); ++k)
        if (table[k] == h || *table[k] == *h) return last_heads = k;
    table.push_back(h);
    return last_heads = table.size() - 1;
}

void Journal::store_slice(store::Txn& txn, Ingest& in, std::size_t from, std::size_t to,
                          std::map<std::int64_t, OpenChunk>& chunks, std::uint64_t& count,
                          std::uint64_t& duplicates, std::uint64_t& cards_total, std::uint64_t& accepted) {
    const std::int64_t now = in.now;
    // One chunk per expiry bucket, so that retention deletes whole chunks.
    std::map<std::int64_t, std::vector<std::size_t>> buckets; // record indexes
    for (std::size_t k = from; k < to; ++k) {
        Prepared& p = in.prepared[k];
        if (!p.accepted) continue; // refused: results[k] says why
        if (p.external) {
            if (!txn.claim(claim_key(in.instance, *p.external), p.expires)) {
                in.results[k] = SB_DUPLICATE;
                ++duplicates;
                continue;
            }
        }
        cards_total += p.cards;
        ++accepted;
        buckets[p.expires / kBucketMs].push_back(k);
    }

    std::string id;
    for (auto& [bucket, members] : buckets) {
        // The bucket's chunk of this batch: opened by its first slice,
        // written once the batch is all stored (ingest()).
        OpenChunk& chunk = chunks[bucket];
        store::ChunkInfo& info = chunk.info;
        if (info.id == 0) {
            info.id = txn.next_chunk_id();
            info.created_at = now;
        }
        for (std::size_t j = 0; j < members.size(); ++j) {
            // The ingest entry's detail, made on a preparing thread: fetched
            // two records ahead.
            if (j + 2 < members.size()) {
                const std::string& ahead = in.prepared[members[j + 2]].ingest_detail;
                sb::detail::prefetch_bytes(ahead.data(), ahead.size());
            }
            const std::size_t k = members[j];
            Prepared& p = in.prepared[k];
            const std::uint32_t idx = info.count++;
            info.expires_at = std::max(info.expires_at, p.expires);
            // The record itself does not get its id (its chunk does, with
            // append_head; the source gave it up at emit), and neither do its
            // copies here: their worker sets it as it delivers them (made on
            // the preparing threads, they are in another core's cache).
            assign_record_id(id, info.id, idx);
            audit_.append_shared(now, audit::kind::ingest, id, p.ingest_detail, p.ingest_common);
            if (!p.copies.empty()) chunk.members.emplace_back(static_cast<std::uint32_t>(k), idx);
            p.body.append_head(id, p.body.heads() ? chunk.heads_index(p.body.heads()) : 0, chunk.heads);
            chunk.records.emplace_back(chunk.heads.size(), &p.body);
            ++count;
        }
    }
}

void Journal::disclose_chunks(Ingest& in, std::map<std::int64_t, OpenChunk>& chunks,
                              std::map<std::string, std::vector<OutboxEntry>>& out,
                              std::map<std::string, std::uint64_t>& seqs) {
    const std::int64_t now = in.now;
    std::string detail, id;
    // Each route's destination's next seq and outbox entries: looked up in
    // their maps once per batch, not once per copy (map nodes stay put).
    struct RouteSlots {
        const Route* route;
        std::uint64_t* seq;
        std::vector<OutboxEntry>* out;
        util::SharedText purpose, profile, fingerprint;
        std::uint64_t deferred = 0; // copies not made (Ingest::deferred)
    };
    std::deque<RouteSlots> slots; // (stays put as it grows)
    auto slots_of = [&](const Route* route) -> RouteSlots& {
        for (RouteSlots& s : slots)
            if (s.route == route) return s;
        return slots.emplace_back(RouteSlots{route, &seqs[route->destination], &out[route->destination],
                                             route->purpose, route->profile->name(),
                                             route->profile->fingerprint()});
    };
    // Chunk by chunk: a destination's copies of one chunk get consecutive
    // seqs (in the order their records came), so one row holds them all.
    // The chunk's row of each destination (a handful: searched in order),
    // and the route of its last entry.
    struct RowOf {
        std::size_t row;
        const Route* last;
    };
    std::vector<std::pair<std::string_view, RowOf>> row_of;
    for (auto& [bucket, chunk] : chunks) {
        (void)bucket;
        const store::ChunkInfo& info = chunk.info;
        row_of.clear();
        const auto& members = chunk.members;
        for (std::size_t j = 0; j < members.size(); ++j) {
            const auto [k, idx] = members[j];
            // Made on the preparing threads and stored a batch's worth of
            // encodings ago: each record's copies are fetched two ahead,
            // found through its Prepared, fetched four ahead.
            if (j + 4 < members.size()) sb::detail::prefetch_line(&in.prepared[members[j + 4].first].copies);
            if (j + 2 < members.size())
                if (const auto& ahead = in.prepared[members[j + 2].first].copies; !ahead.empty())
                    sb::detail::prefetch_line(ahead.data());
            // And the copies themselves one ahead: the outbox entry takes a
            // reference to each, whose count shares the copy's first line.
            if (j + 1 < members.size())
                for (const Prepared::Copy& c : in.prepared[members[j + 1].first].copies)
                    if (c.record) sb::detail::prefetch_line(c.record.get());
            Prepared& p = in.prepared[k];
            assign_record_id(id, info.id, idx);
            for (Prepared::Copy& c : p.copies) {
                const Route* route = c.route;
                RouteSlots& slot = slots_of(route);
                std::uint64_t seq = ++*slot.seq;
                detail.clear();
                audit::append_attr(detail, "destination", route->destination);
                audit::append_attr(detail, "seq", std::to_string(seq));
                // Purpose, profile, route and fields sent: the same for
                // every copy of a shape on a route, written once per file.
                audit_.append_shared(now, audit::kind::disclose, id, detail, c.detail_tail);

                // The destination's row in this chunk: its seqs here are
                // consecutive, so one row, opened by its first copy.
                auto at = std::find_if(row_of.begin(), row_of.end(),
                                       [&](const auto& r) { return r.first == route->destination; });
                if (at == row_of.end()) {
                    store::OutboxRow& row = chunk.rows.emplace_back();
                    row.destination = route->destination;
                    row.first_seq = seq;
                    row.chunk = info.id;
                    at = row_of.insert(at, {route->destination, {chunk.rows.size() - 1, nullptr}});
                }
                store::OutboxRow& row = chunk.rows[at->second.row];
                OutboxEntry e;
                e.seq = seq;
                e.record_id = id;
                e.chunk = info.id;
                e.index = idx;
                e.expires_at = p.expires;
                e.purpose = slot.purpose;
                e.profile = slot.profile;
                e.profile_version = static_cast<std::uint32_t>(route->profile->version());
                e.fingerprint = slot.fingerprint;
                e.lawful_basis = route->has_lawful_basis();
                e.routed_at = now;
                if (c.record)
                    e.record = std::move(c.record);
                else
                    ++slot.deferred;
                ++row.count;
                row.expires_at = std::max(row.expires_at, p.expires);
                put_u32(row.indexes, idx);
                // The copy itself is not stored: the record is, in the
                // chunk, and the copy is made again from it when needed.
                // The same route as the row's entry before: all of it the
                // same (routed now, as every copy of the batch).
                if (at->second.last == route) {
                    encode_repeat(row.payloads);
                } else {
                    encode_entry_head(e.purpose, e.profile, e.profile_version, row.payloads);
                    encode_reference(e, row.payloads);
                    at->second.last = route;
                }
                slot.out->push_back(std::move(e));
            }
        }
    }
    if (metrics_)
        for (const RouteSlots& s : slots)
            if (s.deferred) metrics_->add(s.route->destination, "copies_deferred", s.deferred);
}


} // namespace switchboard::pipeline
