#include "pipeline/retention.hpp"

#include "governance/holds.hpp"
#include "log.hpp"
#include "pipeline/delivery.hpp"
#include "pipeline/outbox_codec.hpp"
#include "store/codec.hpp"
#include "util/text.hpp"

#include <switchboard/detail/abi.hpp>
#include <switchboard/plugin.hpp>

#include <algorithm>
#include <chrono>
#include <set>

namespace switchboard::pipeline {

namespace {

constexpr const char* kComponent = "retention";
constexpr std::size_t kChunksPerPass = 64;
// How long one pass of the erase tasks waits, in all, for SB_PENDING
// confirmations. A department that is offline answers hours later: its
// notices must not hold up the other erase work, so the pass moves on and
// the task is looked at again after kAwaitRecheckMs (the plugin keeps its
// notice and answers a repeated request at once once it is confirmed).
constexpr std::int64_t kEraseWaitMs = 2'000;
constexpr std::int64_t kAwaitRecheckMs = 30'000;
// Erase request ids carry the top bit, so that host->complete can tell them
// from delivery ids.
constexpr std::uint64_t kEraseIdBit = 1ULL << 63;

// file:// URIs are percent-encoded (RFC 8089): a data directory with a space
// in its name must still match.
std::string uri_path(std::string_view uri) {
    std::string out;
    for (std::size_t i = 0; i < uri.size(); ++i) {
        auto hex = [](char c) {
            return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        };
        if (uri[i] == '%' && i + 2 < uri.size() && hex(uri[i + 1]) >= 0 && hex(uri[i + 2]) >= 0) {
            out.push_back(static_cast<char>(hex(uri[i + 1]) * 16 + hex(uri[i + 2])));
            i += 2;
        } else {
            out.push_back(uri[i]);
        }
    }
    return out;
}

std::int64_t erase_backoff_ms(std::uint32_t attempts) {
    std::int64_t ms = 1000;
    for (std::uint32_t i = 1; i < attempts && ms < 3'600'000; ++i) ms *= 2;
    return std::min<std::int64_t>(ms, 3'600'000);
}

const char* target_name(store::EraseTarget t) {
    return t == store::EraseTarget::Source ? "source" : "destination";
}

using ItemsByInstance = std::map<std::string, std::vector<store::EraseItem>>;

// One erase task per instance: the source's erase hook, the destinations'
// erase notices.
void put_erase_tasks(store::Txn& txn, const ItemsByInstance& at_source, const ItemsByInstance& at_destination,
                     sb_erase_reason reason, std::int64_t now) {
    auto task = [&](const std::string& instance, store::EraseTarget target,
                    const std::vector<store::EraseItem>& items) {
        store::EraseTask t;
        t.instance = instance;
        t.target = target;
        t.reason = reason;
        t.created_at = now;
        t.next_at = now;
        store::encode_items(items, t.items);
        txn.put_erase_task(t);
    };
    for (const auto& [instance, items] : at_source) task(instance, store::EraseTarget::Source, items);
    for (const auto& [instance, items] : at_destination) task(instance, store::EraseTarget::Destination, items);
}

std::string meta_of(const sb_record& r, const char* key) {
    const char* v = r.data.meta(key);
    return v ? v : "";
}

store::EraseItem source_item(const sb_record& r) {
    return {meta_of(r, "id"), meta_of(r, "external_id"), meta_of(r, "subject_ref"), meta_of(r, "channel")};
}

} // namespace

RetentionService::RetentionService(Journal& journal, Clock clock, std::filesystem::path data_dir,
                                   std::int64_t sweep_interval_ms, plugin::Metrics* metrics,
                                   std::int64_t receipt_deadline_ms)
    : journal_(journal), clock_(std::move(clock)), data_dir_(std::move(data_dir)),
      interval_ms_(sweep_interval_ms), metrics_(metrics), receipt_deadline_ms_(receipt_deadline_ms) {}

RetentionService::~RetentionService() { stop(); }

void RetentionService::add_instance(plugin::Instance* instance) { instances_[instance->name()] = instance; }

void RetentionService::start() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = false;
    }
    thread_ = std::thread([this] { run(); });
}

void RetentionService::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    pending_cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void RetentionService::run() {
    using namespace std::chrono;
    auto next_sweep = steady_clock::now();
    auto next_overdue_check = steady_clock::now();
    for (;;) {
        {
            std::lock_guard lock(mutex_);
            if (stopping_) return;
        }
        try {
            if (steady_clock::now() >= next_sweep) {
                auto started = steady_clock::now();
                std::uint64_t n = sweep(clock_());
                if (metrics_)
                    metrics_->set("retention", "sweep_seconds",
                                  duration<double>(steady_clock::now() - started).count());
                if (n) log::info(kComponent, "deleted " + std::to_string(n) + " expired record(s)");
                next_sweep = steady_clock::now() + milliseconds(interval_ms_);
            }
            carry_out_erasures(clock_());
            run_erase_tasks(clock_());
            if (steady_clock::now() >= next_overdue_check) {
                check_overdue(clock_());
                // Once a minute; sooner for a short deadline (tests).
                next_overdue_check = steady_clock::now() +
                                     milliseconds(std::clamp<std::int64_t>(receipt_deadline_ms_ / 4, 1000, 60'000));
            }
        } catch (const std::exception& e) {
            log::error(kComponent, std::string("sweep failed; will retry: ") + e.what());
        }
        std::unique_lock lock(mutex_);
        wake_.wait_for(lock, milliseconds(std::min<std::int64_t>(interval_ms_, 1000)),
                       [&] { return stopping_; });
    }
}

std::uint64_t RetentionService::sweep(std::int64_t now) {
    std::uint64_t deleted = 0;
    std::vector<std::filesystem::path> files;
    // Holds set, ended or run out since the last sweep are audited (the CLI
    // writes them to the store; only the node appends to the trail). Held
    // chunks are not among the expired ones: the store's query skips them.
    if (governance::holds_unsettled(journal_.store(), now))
        journal_.submit_and_wait([&](store::Txn& txn, audit::AuditLog& audit) {
            governance::settle_holds(journal_.store(), txn, audit, now);
        });
    for (;;) {
        auto due = journal_.store().expired_chunks(now, kChunksPerPass);
        for (const auto& chunk : due) deleted += sweep_chunk(chunk, now, files);
        if (due.size() < kChunksPerPass) break;
    }
    std::uint64_t quarantined = 0, claims = 0;
    journal_.submit_and_wait([&](store::Txn& txn, audit::AuditLog& audit) {
        quarantined = txn.expire_quarantine(now);
        claims = txn.expire_claims(now);
        if (quarantined) {
            std::string detail;
            audit::append_attr(detail, "quarantine_items", std::to_string(quarantined));
            audit.append(now, "expire", "", detail);
        }
    });
    for (const auto& f : files) {
        std::error_code ec;
        std::filesystem::remove(f, ec);
    }
    // Deleted bytes must not linger in the store's files.
    if (deleted || quarantined) journal_.store().scrub();
    if (metrics_ && deleted) metrics_->add("retention", "records_expired", deleted);
    return deleted;
}

std::uint64_t RetentionService::sweep_chunk(const store::ChunkInfo& chunk, std::int64_t now,
                                            std::vector<std::filesystem::path>& files) {
    auto& st = journal_.store();
    auto body = st.chunk_body(chunk.id);
    if (!body) return 0;
    struct Expired {
        std::string id, source;
        std::vector<std::string> notices;
    };
    std::vector<Expired> expired;
    std::set<std::string> erased; // tombstones: erased on request, their erasure told everyone
    ItemsByInstance at_source, at_destination;
    store::ChunkHeads table;
    const bool table_ok = table.read(*body);
    std::size_t pos = table_ok ? table.first : body->size();
    if (!table_ok)
        log::error(kComponent, "chunk " + std::to_string(chunk.id) + " has an unreadable table of field heads; "
                               "deleting the chunk anyway");
    while (pos < body->size()) {
        sb_record r;
        if (!store::decode(*body, pos, r, nullptr, &table)) {
            log::error(kComponent, "chunk " + std::to_string(chunk.id) +
                                       " has an unreadable record; deleting the chunk anyway");
            break;
        }
        if (is_tombstone(r)) {
            erased.insert(meta_of(r, "id"));
            continue;
        }
        Expired e{meta_of(r, "id"), meta_of(r, "source"), {}};
        at_source[e.source].push_back(source_item(r));
        attachment_files(r, files);
        expired.push_back(std::move(e));
    }
    std::map<std::string, std::size_t> by_id;
    for (std::size_t i = 0; i < expired.size(); ++i) by_id[expired[i].id] = i;
    for (const auto& row : st.outbox_for_chunk(chunk.id)) {
        std::uint64_t acked = st.acked(row.destination);
        auto dead = st.dead_seqs_for_chunk(row.destination, chunk.id);
        std::set<std::uint64_t> dead_set(dead.begin(), dead.end());
        for (std::uint32_t k = 0; k < row.count; ++k) {
            std::uint64_t seq = row.first_seq + k;
            if (seq > acked || dead_set.count(seq)) continue; // never delivered
            std::string id = record_id(chunk.id, outbox_index(row.indexes, k));
            if (erased.count(id)) continue;
            at_destination[row.destination].push_back({id, "", "", ""});
            if (auto it = by_id.find(id); it != by_id.end())
                expired[it->second].notices.push_back(row.destination);
        }
    }
    bool ok = journal_.submit_and_wait([&](store::Txn& txn, audit::AuditLog& audit) {
        txn.delete_outbox_for_chunk(chunk.id);
        txn.delete_dead_letters_for_chunk(chunk.id);
        txn.delete_chunk(chunk.id);
        put_erase_tasks(txn, at_source, at_destination, SB_ERASE_RETENTION, now);
        std::string detail;
        for (const auto& e : expired) {
            detail.clear();
            audit::append_attr(detail, "reason", "retention");
            audit::append_attr(detail, "source", e.source);
            audit::append_attr(detail, "store", "deleted");
            std::string notices;
            for (const auto& d : e.notices) notices += (notices.empty() ? "" : ",") + d;
            audit::append_attr(detail, "erase_requested", e.source + (notices.empty() ? "" : "," + notices));
            audit.append(now, "expire", e.id, detail);
        }
    });
    return ok ? expired.size() : 0;
}

void RetentionService::attachment_files(const sb_record& r, std::vector<std::filesystem::path>& files) const {
    std::string prefix = std::filesystem::absolute(data_dir_).lexically_normal().string() + "/";
    for (const auto& a : r.data.attachments()) {
        if (a.uri.rfind("file://", 0) != 0) continue;
        std::string path = std::filesystem::path(uri_path(a.uri.substr(7))).lexically_normal().string();
        // Only what Switchboard holds; vendors' files are their erase hooks' business.
        if (path.rfind(prefix, 0) == 0) files.emplace_back(path);
    }
}

std::uint64_t RetentionService::carry_out_erasures(std::int64_t now) {
    std::uint64_t done = 0;
    for (auto& erasure : journal_.store().pending_erasures(16)) {
        carry_out(erasure, now);
        ++done;
    }
    if (done) journal_.store().scrub(); // no byte of the erased values may linger
    return done;
}

void RetentionService::carry_out(store::Erasure& erasure, std::int64_t now) {
    auto& st = journal_.store();
    // Holds win: a record held (a complaint, a subject access request) is
    // not erased until its hold ends (DPA 2018 s.173).
    std::map<std::string, std::vector<std::string>> held; // record id -> holds keeping it
    for (const auto& h : st.held_records(now)) held[h.record_id].push_back(std::to_string(h.hold));
    std::map<std::int64_t, std::vector<store::ErasureRecord*>> by_chunk;
    for (auto& r : erasure.records) {
        if (auto it = held.find(r.record_id); it != held.end()) {
            r.outcome = "held";
            r.detail = text::join(it->second, ",");
        } else {
            by_chunk[r.chunk].push_back(&r);
        }
    }
    ItemsByInstance at_source, at_destination;
    std::vector<std::filesystem::path> files;
    std::vector<std::pair<std::int64_t, std::string>> bodies;                      // chunk, new body
    std::vector<std::tuple<std::string, std::uint64_t, std::string>> payloads;    // destination, row, payloads
    std::vector<std::int64_t> dead_letters;
    std::vector<std::string> erased_ids;
    std::map<std::string, std::set<std::string>> asked; // record id -> instances asked to erase
    for (auto& [chunk, wanted] : by_chunk) {
        std::map<std::string, store::ErasureRecord*> want;
        for (auto* r : wanted) want[r->record_id] = r;
        auto body = st.chunk_body(chunk);
        if (!body) {
            for (auto* r : wanted) {
                r->outcome = "gone";
                r->detail = "no longer held (deleted by the retention clock)";
            }
            continue;
        }
        // The chunk rewritten: the records wanted become tombstones, the
        // others are copied byte for byte.
        std::string rewritten;
        std::set<std::string> here; // wanted records erased in this chunk
        // The table of field heads (paths and categories, never values) is
        // kept as it is: the records left still name its entries.
        store::ChunkHeads table;
        bool readable = table.read(*body);
        std::size_t pos = readable ? table.first : body->size();
        if (readable)
            rewritten.append(*body, 0, table.first);
        else
            log::error(kComponent, "chunk " + std::to_string(chunk) + " has an unreadable table of field heads; "
                                   "erasure " + std::to_string(erasure.id) + " leaves it as it is");
        while (pos < body->size()) {
            std::size_t start = pos;
            sb_record r;
            if (!store::decode(*body, pos, r, nullptr, &table)) {
                log::error(kComponent, "chunk " + std::to_string(chunk) + " has an unreadable record; "
                                       "erasure " + std::to_string(erasure.id) + " leaves it as it is");
                readable = false;
                break;
            }
            std::string id = meta_of(r, "id");
            auto it = want.find(id);
            if (it == want.end()) {
                rewritten.append(*body, start, pos - start);
                continue;
            }
            if (is_tombstone(r)) {
                it->second->outcome = "gone";
                it->second->detail = "erased before";
                rewritten.append(*body, start, pos - start);
                continue;
            }
            std::string source = meta_of(r, "source");
            at_source[source].push_back(source_item(r));
            asked[id].insert(source);
            attachment_files(r, files);
            store::encode(tombstone(id, meta_of(r, "expires_at")), rewritten);
            here.insert(id);
        }
        if (!readable) {
            for (auto* r : wanted)
                if (r->outcome.empty()) {
                    r->outcome = "failed";
                    r->detail = "its chunk is unreadable: see the node's log";
                }
            continue;
        }
        for (auto* r : wanted)
            if (r->outcome.empty() && !here.count(r->record_id)) {
                r->outcome = "gone";
                r->detail = "not in the store";
            }
        if (here.empty()) continue;
        bodies.emplace_back(chunk, std::move(rewritten));
        // Every destination with an entry for the record is told, whether the
        // entry was delivered or not: one handed over just before the erasure
        // may still arrive. Entries not delivered are emptied (the worker
        // skips them); dead letters are deleted.
        for (const auto& row : st.outbox_for_chunk(chunk)) {
            std::set<std::uint64_t> dead_seqs;
            for (const auto& d : st.dead_letters(row.destination))
                if (d.chunk == chunk && here.count(d.record_id)) {
                    dead_letters.push_back(d.id);
                    dead_seqs.insert(d.seq);
                }
            std::string out;
            std::size_t at = 0;
            bool changed = false, intact = !row.payloads.empty();
            // A repeat entry ("the same as the one before") copied after a
            // tombstone written in place of what it repeats is written out
            // in full instead: the last full entry of the row, as it was.
            std::string_view last_full;
            bool repeat_broken = false;
            for (std::uint32_t k = 0; k < row.count; ++k) {
                std::string id = record_id(chunk, outbox_index(row.indexes, k));
                std::size_t start = at;
                if (intact && !skip_entry(row.payloads, at)) intact = false;
                const std::string_view entry =
                    intact ? std::string_view(row.payloads).substr(start, at - start) : std::string_view();
                const bool repeat = intact && is_repeat(row.payloads, start);
                if (intact && !repeat) last_full = entry;
                if (repeat && last_full.empty()) intact = false; // a repeat of nothing: leave the row as it is
                if (!here.count(id)) {
                    if (!intact) continue;
                    if (repeat && repeat_broken) {
                        out.append(last_full);
                        repeat_broken = false;
                    } else {
                        out.append(entry);
                        if (!repeat) repeat_broken = false;
                    }
                    continue;
                }
                if (!dead_seqs.count(row.first_seq + k)) {
                    at_destination[row.destination].push_back({id, "", "", ""});
                    asked[id].insert(row.destination);
                }
                if (intact) {
                    OutboxEntry gone;
                    gone.profile = kErasedProfile;
                    gone.record = std::make_shared<sb_record>(tombstone(id, ""));
                    encode_entry(gone, out);
                    changed = true;
                    repeat_broken = true;
                }
            }
            if (changed && intact) payloads.emplace_back(row.destination, row.first_seq, std::move(out));
        }
        for (auto* r : wanted)
            if (here.count(r->record_id)) {
                r->outcome = "erased";
                erased_ids.push_back(r->record_id);
                const auto& instances = asked[r->record_id];
                r->detail = text::join({instances.begin(), instances.end()}, ",");
            }
    }
    // Delivery workers stop handing these over before the store changes.
    journal_.mark_erased(erased_ids);
    bool ok = journal_.submit_and_wait([&](store::Txn& txn, audit::AuditLog& audit) {
        for (const auto& [chunk, body] : bodies) txn.replace_chunk_body(chunk, body);
        for (const auto& [destination, first_seq, p] : payloads) txn.replace_outbox_payloads(destination, first_seq, p);
        for (auto id : dead_letters) txn.delete_dead_letter(id);
        put_erase_tasks(txn, at_source, at_destination, SB_ERASE_REQUEST, now);
        std::string detail;
        for (const auto& r : erasure.records) {
            detail.clear();
            audit::append_attr(detail, "reason", "request");
            audit::append_attr(detail, "erasure", std::to_string(erasure.id));
            audit::append_attr(detail, "by", erasure.requested_by);
            audit::append_attr(detail, "outcome", r.outcome);
            if (r.outcome == "erased") {
                audit::append_attr(detail, "store", "deleted");
                audit::append_attr(detail, "erase_requested", r.detail);
            } else if (r.outcome == "held") {
                audit::append_attr(detail, "holds", r.detail);
            }
            audit.append(now, audit::kind::erasure, r.record_id, detail);
        }
        txn.finish_erasure(erasure, now);
    });
    if (!ok) {
        log::error(kComponent, "erasure " + std::to_string(erasure.id) + " could not be committed; will retry");
        return;
    }
    for (const auto& f : files) {
        std::error_code ec;
        std::filesystem::remove(f, ec);
    }
    if (metrics_ && !erased_ids.empty()) metrics_->add("retention", "records_erased_on_request", erased_ids.size());
    log::info(kComponent, "erasure " + std::to_string(erasure.id) + ": " + std::to_string(erased_ids.size()) +
                              " of " + std::to_string(erasure.records.size()) + " record(s) erased; erase requests "
                              "sent to their sources and departments");
}

std::uint64_t RetentionService::run_erase_tasks(std::int64_t now) {
    std::uint64_t settled_total = 0;
    auto tasks = journal_.store().erase_tasks(now, 16);
    std::set<std::string> late;
    {
        std::lock_guard lock(pending_mutex_);
        late.swap(late_answers_);
    }
    if (!late.empty())
        for (auto& t : journal_.store().erase_tasks(INT64_MAX, 256))
            if (t.next_at > now && late.count(t.instance)) tasks.push_back(std::move(t));
    const auto pass_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kEraseWaitMs);
    for (auto& t : tasks) {
        std::vector<store::EraseItem> items;
        if (!store::decode_items(t.items, items)) {
            log::error(kComponent, "erase task " + std::to_string(t.id) + " is unreadable; dropped");
            journal_.submit_and_wait([&](store::Txn& txn, audit::AuditLog&) { txn.delete_erase_task(t.id); });
            continue;
        }
        struct Step {
            std::string record_id, outcome, receipt, status;
        };
        std::vector<Step> steps;
        auto it = instances_.find(t.instance);
        plugin::Instance* inst = it == instances_.end() ? nullptr : it->second;
        std::vector<std::uint64_t> asked; // request ids of this task, to forget afterwards
        if (!inst || !inst->running()) {
            t.attempts++;
            t.next_at = now + erase_backoff_ms(t.attempts);
            t.last_error = "instance " + t.instance + " is not running";
        } else {
            // Items are settled in order (t.done counts the settled prefix).
            // Once one is awaiting its confirmation, the later ones are still
            // asked for, so that a department receives all its notices at
            // once, but they are recorded only when the prefix reaches them.
            bool awaiting = false;
            std::size_t awaiting_count = 0;
            for (std::size_t k = t.done; k < items.size(); ++k) {
                const auto& item = items[k];
                sb_record rec;
                rec.data.set_meta_at(sb::detail::meta_index("id"), item.record_id);
                if (!item.external_id.empty())
                    rec.data.set_meta_at(sb::detail::meta_index("external_id"), item.external_id);
                if (!item.subject_ref.empty())
                    rec.data.set_meta_at(sb::detail::meta_index("subject_ref"), item.subject_ref);
                if (!item.channel.empty())
                    rec.data.set_meta_at(sb::detail::meta_index("channel"), item.channel);
                sb_erase_request req{};
                req.struct_size = sizeof req;
                {
                    std::lock_guard lock(pending_mutex_);
                    req.request_id = kEraseIdBit | next_request_++;
                    awaited_.insert({t.instance, req.request_id});
                }
                asked.push_back(req.request_id);
                req.record_id = item.record_id.c_str();
                req.external_id = item.external_id.empty() ? nullptr : item.external_id.c_str();
                req.reason = static_cast<sb_erase_reason>(t.reason);
                req.record = &rec;
                std::string error, receipt;
                sb_status s = inst->erase(req, error);
                if (s == SB_PENDING) {
                    std::unique_lock lock(pending_mutex_);
                    auto key = std::make_pair(t.instance, req.request_id);
                    // Behind an item already awaiting, only what is there at once.
                    bool done = pending_cv_.wait_until(lock, awaiting ? std::chrono::steady_clock::now() : pass_deadline,
                                                       [&] { return completed_.count(key) > 0; });
                    if (done) {
                        s = completed_[key].first;
                        receipt = completed_[key].second;
                        completed_.erase(key);
                    }
                }
                if (s == SB_PENDING) {
                    ++awaiting_count;
                    if (!awaiting) {
                        awaiting = true;
                        t.next_at = now + kAwaitRecheckMs;
                    }
                    continue;
                }
                bool settled = s == SB_OK || s == SB_ERR_UNSUPPORTED || s == SB_ERR_PERMANENT ||
                               s == SB_ERR_INVALID || s == SB_ERR_NOT_FOUND;
                if (settled && awaiting) continue; // recorded when the prefix reaches it
                if (settled) {
                    std::string outcome = s == SB_OK ? "confirmed"
                                          : s == SB_ERR_UNSUPPORTED ? "no_erase_hook"
                                          : s == SB_ERR_NOT_FOUND ? "not_found"
                                                                  : "failed_permanently";
                    if (s == SB_ERR_PERMANENT || s == SB_ERR_INVALID)
                        log::Logger::get().write(log::Level::Warn, kComponent, t.instance,
                                                 "erase of " + item.record_id + " failed permanently: " +
                                                     error);
                    steps.push_back({item.record_id, outcome, receipt, sb::status_name(s)});
                    ++t.done;
                    continue;
                }
                if (awaiting) break; // no more asking past a failure
                t.attempts++;
                t.next_at = now + erase_backoff_ms(t.attempts);
                t.last_error = std::string(sb::status_name(s)) + (error.empty() ? "" : ": " + error);
                log::Logger::get().write(log::Level::Warn, kComponent, t.instance,
                                         "erase of " + item.record_id + " will be retried: " + t.last_error);
                break;
            }
            if (awaiting) {
                t.last_error = "awaiting confirmation of " + std::to_string(awaiting_count) +
                               " item(s) from the destination (asked again every " +
                               std::to_string(kAwaitRecheckMs / 1000) + "s)";
                if (metrics_) metrics_->add(t.instance, "erase_awaiting_checks", 1);
            }
        }
        {
            // Confirmations that come after this pass are taken from the
            // plugin when the task is looked at again.
            std::lock_guard lock(pending_mutex_);
            for (auto id : asked) {
                awaited_.erase({t.instance, id});
                completed_.erase({t.instance, id});
            }
        }
        settled_total += steps.size();
        bool finished = t.done >= items.size();
        journal_.submit_and_wait([&](store::Txn& txn, audit::AuditLog& audit) {
            std::string detail;
            for (const auto& s : steps) {
                detail.clear();
                audit::append_attr(detail, "instance", t.instance);
                audit::append_attr(detail, "target", target_name(t.target));
                audit::append_attr(detail, "reason", t.reason == SB_ERASE_REQUEST ? "request" : "retention");
                audit::append_attr(detail, "outcome", s.outcome);
                if (!s.receipt.empty()) audit::append_attr(detail, "receipt", receipt_text(s.receipt));
                audit.append(now, audit::kind::erase, s.record_id, detail);
            }
            if (finished)
                txn.delete_erase_task(t.id);
            else
                txn.update_erase_task(t);
        });
        if (metrics_ && !steps.empty()) metrics_->add(t.instance, "erase_steps", steps.size());
    }
    return settled_total;
}

std::uint64_t RetentionService::check_overdue(std::int64_t now) {
    std::map<std::string, std::uint64_t> per_instance;
    std::uint64_t total = 0;
    for (const auto& t : journal_.store().erase_tasks(INT64_MAX, 100000)) {
        if (!erase_overdue(t, now, receipt_deadline_ms_)) continue;
        ++per_instance[t.instance];
        ++total;
    }
    if (metrics_) {
        metrics_->set("retention", "erase_tasks_overdue", static_cast<double>(total));
        for (const auto& name : overdue_at_)
            if (!per_instance.count(name)) metrics_->set(name, "erase_tasks_overdue", 0);
        for (const auto& [name, n] : per_instance)
            metrics_->set(name, "erase_tasks_overdue", static_cast<double>(n));
    }
    overdue_at_.clear();
    for (const auto& [name, n] : per_instance) overdue_at_.insert(name);
    if (total > overdue_)
        log::warn(kComponent, std::to_string(total) + " erase task(s) unconfirmed for longer than "
                                  "retention.receipt_deadline (" + text::format_duration(receipt_deadline_ms_) +
                                  "): missing deletion receipts; see switchboard retention --pending");
    overdue_ = total;
    return total;
}

void RetentionService::complete(const std::string& instance, std::uint64_t id, sb_status status,
                                const char* receipt) {
    {
        std::lock_guard lock(pending_mutex_);
        if (!awaited_.count({instance, id})) {
            // A pass that gave up on it: ask again at the next pass.
            late_answers_.insert(instance);
        } else {
            completed_[{instance, id}] = {status, receipt ? receipt : ""};
        }
    }
    pending_cv_.notify_all();
    wake_.notify_all();
}

} // namespace switchboard::pipeline
