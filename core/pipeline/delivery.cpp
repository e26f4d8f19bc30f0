#include "pipeline/delivery.hpp"

#include "log.hpp"
#include "pipeline/outbox_codec.hpp"
#include "store/codec.hpp"

#include <switchboard/plugin.hpp>

#include <algorithm>
#include <chrono>

namespace switchboard::pipeline {

namespace {

std::int64_t steady_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// The entry's copy, with its record id: copies made at ingest come without
// it (the journal's writer leaves it to the worker, which reads the copy as
// it hands it over anyway; made on the preparing threads, it is in another
// core's cache).
sb_record* with_record_id(const OutboxEntry& e) {
    static const int id = sb::detail::meta_index("id");
    if (e.record && !e.record->data.meta_at(id)) {
        if (e.record->is_rendered) sb::detail::set_rendered_id(*e.record, e.record_id);
        else e.record->data.set_meta_at(id, e.record_id);
    }
    return e.record.get();
}

// Fetches what delivering `r` will read first: its JSON when rendered.
void prefetch(const sb_record& r) {
    if (!r.is_rendered) return r.data.prefetch();
    if (r.rendered_at < r.rendered.size())
        sb::detail::prefetch_bytes(r.rendered.data() + r.rendered_at, r.rendered.size() - r.rendered_at);
}

// A plugin that declares SB_CAP_JSON_RECORDS and read a rendered record's
// fields all the same: the delivery fails, never half done in silence.
void broke_json_promise(const OutboxEntry& e, sb_status& st, std::string& error) {
    if (!e.record || !e.record->fields_read) return;
    e.record->fields_read = false;
    st = SB_ERR_PERMANENT;
    error = "the plugin declares json-records (SB_CAP_JSON_RECORDS) but read the record's fields, "
            "which a record rendered as JSON does not have: the plugin must read record_json only, "
            "or not declare json-records";
}

} // namespace

std::string receipt_text(std::string_view receipt) {
    std::string out = sb::detail::audit_detail_sanitise(receipt);
    if (out.size() > kReceiptMax) {
        std::size_t cut = kReceiptMax - 3;
        while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
        out.resize(cut);
        out += "...";
    }
    return out;
}

DeliveryWorker::DeliveryWorker(plugin::Instance& instance, Journal& journal, Clock clock,
                               plugin::Metrics* metrics)
    : instance_(instance), journal_(journal), clock_(std::move(clock)), metrics_(metrics),
      config_(instance.config()),
      json_records_((instance.descriptor().capabilities & SB_CAP_JSON_RECORDS) != 0) {}

DeliveryWorker::~DeliveryWorker() { stop(); }

const std::string& DeliveryWorker::destination() const { return config_.name; }

void DeliveryWorker::start() {
    acked_ = journal_.store().acked(destination());
    {
        std::lock_guard lock(mutex_);
        tail_ = acked_;
        set_behind(true);
        stopping_ = false;
    }
    thread_ = std::thread([this] { run(); });
    filler_ = std::thread([this] { run_filler(); });
}

void DeliveryWorker::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    fill_wake_.notify_all();
    if (filler_.joinable()) filler_.join();
    if (thread_.joinable()) thread_.join();
}

void DeliveryWorker::offer(std::vector<OutboxEntry>&& entries) {
    if (entries.empty()) return;
    {
        std::lock_guard lock(mutex_);
        // Entries without their copies (the journal made none while this
        // worker was behind) are read back like any declined.
        if (behind_ || queue_.size() + entries.size() > kMaxQueued || entries.front().seq != tail_ + 1 ||
            std::any_of(entries.begin(), entries.end(), [](const OutboxEntry& e) { return !e.record; })) {
            // The entries are in the store; the filler reads them from there.
            set_behind(true);
            dropped_ = true;
        } else {
            tail_ = entries.back().seq;
            for (auto& e : entries) queue_.push_back(std::move(e));
            wake_.notify_all();
            return;
        }
    }
    fill_wake_.notify_all();
}

void DeliveryWorker::complete(std::uint64_t id, sb_status status, const char* receipt) {
    {
        std::lock_guard lock(pending_mutex_);
        // A completion for a delivery given up on (handed over again since)
        // is not wanted.
        if (!waiting_.erase(id)) return;
        completed_[id] = {status, receipt ? receipt : ""};
    }
    pending_cv_.notify_all();
    {
        std::lock_guard lock(mutex_);
        completions_ready_ = true;
    }
    wake_.notify_all();
}

void DeliveryWorker::keep_spent(std::vector<std::shared_ptr<sb_record>>& copies) {
    if (copies.empty()) return;
    {
        std::lock_guard lock(spent_mutex_);
        for (auto& r : copies) {
            if (spent_.size() >= kFillBatch) break;
            spent_.push_back(std::move(r));
        }
    }
    copies.clear(); // (any left over: freed here)
}

void DeliveryWorker::run_filler() {
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            fill_wake_.wait(lock, [&] { return stopping_ || (behind_ && queue_.size() < kFillAhead); });
            if (stopping_) return;
        }
        bool more = false;
        try {
            more = fill();
        } catch (const std::exception& e) {
            // The store could not be read: tried again in a second.
            log::error("delivery", destination() + ": cannot read the outbox: " + e.what());
            std::unique_lock lock(mutex_);
            fill_wake_.wait_for(lock, std::chrono::seconds(1), [&] { return stopping_; });
            continue;
        }
        if (more) wake_.notify_all();
    }
}

bool DeliveryWorker::fill() {
    std::uint64_t from;
    {
        std::lock_guard lock(mutex_);
        if (!behind_) return false;
        dropped_ = false;
        from = tail_;
    }
    // Up to kFillBatch entries: rows hold from one entry to a whole group's.
    auto rows = journal_.store().outbox_after(destination(), from, 1024, kFillBatch);
    std::vector<std::shared_ptr<sb_record>> spent; // copies to make the new ones in
    {
        std::lock_guard lock(spent_mutex_);
        spent.swap(spent_);
    }
    std::vector<OutboxEntry> loaded;
    Journal::ChunkCache chunk;
    EntryRef ref;
    for (const auto& row : rows) {
        std::size_t pos = 0;
        EntryContext context; // what a repeat entry repeats, in this row
        for (std::uint32_t k = 0; k < row.count; ++k) {
            OutboxEntry e;
            e.seq = row.first_seq + k;
            e.chunk = row.chunk;
            e.index = outbox_index(row.indexes, k);
            assign_record_id(e.record_id, row.chunk, e.index);
            e.expires_at = row.expires_at;
            EntryForm form = row.payloads.empty() ? EntryForm::Bad : decode_entry(row.payloads, pos, e, ref, &context);
            if (form == EntryForm::Bad) {
                log::error("delivery", destination() + ": outbox row at seq " +
                                           std::to_string(row.first_seq) + " is unreadable; skipped");
                break;
            }
            if (e.seq <= from || loaded.size() >= kFillBatch) continue;
            if (form == EntryForm::Reference && e.profile != kErasedProfile) {
                std::shared_ptr<sb_record> reuse;
                if (!spent.empty()) {
                    reuse = std::move(spent.back());
                    spent.pop_back();
                }
                journal_.rebuild(e, ref, chunk, std::move(reuse));
            }
            loaded.push_back(std::move(e));
        }
    }
    if (metrics_ && !loaded.empty()) metrics_->add(destination(), "read_back", loaded.size());
    bool caught_up = false;
    {
        std::lock_guard lock(mutex_);
        if (loaded.empty()) {
            // Caught up, unless a commit was offered (and dropped) meanwhile.
            if (!dropped_) set_behind(false);
            caught_up = !behind_;
        }
        for (auto& e : loaded) {
            if (e.seq <= tail_) continue;
            tail_ = e.seq;
            queue_.push_back(std::move(e));
        }
    }
    if (caught_up) {
        std::lock_guard lock(spent_mutex_);
        spent_.clear();
    } else {
        keep_spent(spent); // not used: for the next fill
    }
    return !loaded.empty();
}

std::int64_t DeliveryWorker::backoff_ms(std::uint32_t attempt) {
    double base = static_cast<double>(config_.backoff_ms);
    for (std::uint32_t i = 1; i < attempt && base < static_cast<double>(config_.backoff_max_ms); ++i)
        base *= 2;
    base = std::min(base, static_cast<double>(config_.backoff_max_ms));
    // Jitter: anywhere in the upper half, so that many destinations retrying
    // after one outage do not retry in step.
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    return static_cast<std::int64_t>(base * jitter(rng_));
}

void DeliveryWorker::run() {
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            if (stopping_) return;
            std::int64_t wait = retry_at_ - steady_ms();
            if (wait > 0) {
                wake_.wait_for(lock, std::chrono::milliseconds(wait), [&] { return stopping_; });
                continue;
            }
        }
        std::size_t queued;
        {
            std::lock_guard lock(mutex_);
            queued = queue_.size();
        }
        if (queued <= inflight_.size() && inflight_.empty()) {
            if (steady_ms() - last_retry_check_ > 1000) {
                last_retry_check_ = steady_ms();
                retry_dead_letters();
            }
            std::unique_lock lock(mutex_);
            wake_.wait_for(lock, std::chrono::milliseconds(500), [&] { return stopping_ || !queue_.empty(); });
            continue;
        }
        if (deliver_some()) continue;
        // Deliveries outstanding and nothing to hand over: wait for a
        // completion, for more entries, or for the oldest one's timeout.
        const std::size_t window = static_cast<std::size_t>(config_.batch);
        std::unique_lock lock(mutex_);
        wake_.wait_for(lock, std::chrono::milliseconds(100), [&] {
            return stopping_ || completions_ready_ || (inflight_.size() < window && queue_.size() > inflight_.size());
        });
        completions_ready_ = false;
    }
}

sb_status DeliveryWorker::deliver_one(const OutboxEntry& e, std::uint32_t attempt, std::string& error,
                                      std::string& receipt) {
    sb_delivery d{};
    d.struct_size = sizeof d;
    d.delivery_id = next_delivery_id_++;
    d.sequence = e.seq;
    d.record_id = e.record_id.c_str();
    d.purpose = e.purpose.c_str();
    d.profile = e.profile.c_str();
    d.profile_version = e.profile_version;
    d.attempt = attempt;
    d.record = with_record_id(e);
    {
        std::lock_guard lock(pending_mutex_);
        waiting_.insert(d.delivery_id);
    }
    sb_status st = instance_.deliver(d, error);
    broke_json_promise(e, st, error);
    if (st != SB_PENDING) {
        std::lock_guard lock(pending_mutex_);
        waiting_.erase(d.delivery_id);
        return st;
    }
    // Asynchronous acknowledgement: wait for the plugin's complete().
    std::unique_lock lock(pending_mutex_);
    bool done = pending_cv_.wait_for(lock, std::chrono::milliseconds(kPendingTimeoutMs),
                                     [&] { return completed_.count(d.delivery_id) > 0; });
    if (!done) {
        waiting_.erase(d.delivery_id);
        error = "no completion within " + std::to_string(kPendingTimeoutMs / 1000) + "s";
        return SB_ERR_TRANSIENT;
    }
    auto [status, text] = completed_[d.delivery_id];
    completed_.erase(d.delivery_id);
    receipt = text;
    return status;
}

void DeliveryWorker::abandon_from(std::size_t i) {
    std::lock_guard lock(pending_mutex_);
    for (std::size_t k = i; k < inflight_.size(); ++k) {
        waiting_.erase(inflight_[k].delivery_id);
        completed_.erase(inflight_[k].delivery_id);
    }
    inflight_.resize(std::min(i, inflight_.size()));
}

bool DeliveryWorker::deliver_some() {
    const std::size_t window = static_cast<std::size_t>(config_.batch);
    const std::int64_t now = clock_();
    bool moved = false;

    // 1. Hand the next entries over, unless one outstanding has failed (the
    //    retry starts from the first unsettled one, in order).
    bool failed = std::any_of(inflight_.begin(), inflight_.end(), [](const Inflight& f) {
        return !f.expired && !f.erased && f.status != SB_OK && f.status != SB_PENDING;
    });
    std::vector<const OutboxEntry*> fresh;
    if (!failed && inflight_.size() < window) {
        std::lock_guard lock(mutex_);
        std::size_t n = std::min(queue_.size(), window);
        for (std::size_t i = inflight_.size(); i < n; ++i) fresh.push_back(&queue_[i]);
    }
    bool handed = false;
    for (std::size_t k = 0; k < fresh.size(); ++k) {
        const OutboxEntry& e = *fresh[k];
        // The copies were made on the preparing threads a commit ago, and
        // are no longer in this core's cache: each record is fetched four
        // deliveries ahead, and its JSON (found through it) two ahead.
        if (k + 2 < fresh.size() && fresh[k + 2]->record) prefetch(*fresh[k + 2]->record);
        if (k + 4 < fresh.size() && fresh[k + 4]->record)
            sb::detail::prefetch_bytes(fresh[k + 4]->record.get(), sizeof(sb_record)); // where its JSON is
        Inflight f;
        f.entry = &e;
        auto failed = attempts_.find(e.seq); // (most have none: no map node made for them)
        f.attempt = (failed == attempts_.end() ? 0 : failed->second) + 1;
        f.since = steady_ms();
        if (e.expires_at <= now) {
            f.expired = true; // its retention period ended before it could be delivered
            inflight_.push_back(std::move(f));
            continue;
        }
        if (e.profile == kErasedProfile || journal_.erased(e.record_id)) {
            f.erased = true; // erased on request before it could be delivered
            inflight_.push_back(std::move(f));
            continue;
        }
        if (!e.record) {
            // Its copy could not be made from the store (Journal::rebuild):
            // dead-lettered with the reason, never sent otherwise.
            f.status = SB_ERR_PERMANENT;
            f.error = e.unbuilt ? e.unbuilt->why : "no copy to deliver";
            inflight_.push_back(std::move(f));
            continue;
        }
        sb_delivery d{};
        d.struct_size = sizeof d;
        d.delivery_id = f.delivery_id = next_delivery_id_++;
        d.sequence = e.seq;
        d.record_id = e.record_id.c_str();
        d.purpose = e.purpose.c_str();
        d.profile = e.profile.c_str();
        d.profile_version = e.profile_version;
        d.attempt = f.attempt;
        d.record = with_record_id(e);
        {
            std::lock_guard lock(pending_mutex_);
            waiting_.insert(f.delivery_id);
        }
        sb_status st = instance_.deliver(d, f.error);
        broke_json_promise(e, st, f.error);
        handed = true;
        if (st != SB_PENDING) {
            std::lock_guard lock(pending_mutex_);
            waiting_.erase(f.delivery_id);
        }
        f.status = st;
        f.unflushed = st == SB_OK;
        inflight_.push_back(std::move(f));
        if (st != SB_OK && st != SB_PENDING) break;
    }
    if (handed) {
        moved = true;
        // Delivered means durable at the plugin: flush before counting them.
        std::string error;
        sb_status st = instance_.flush(error);
        std::size_t unflushed = 0;
        for (Inflight& f : inflight_) {
            if (!f.unflushed) continue;
            f.unflushed = false;
            ++unflushed;
            if (st != SB_OK) {
                f.status = SB_ERR_TRANSIENT;
                f.error = "flush failed (" + std::string(sb::status_name(st)) + (error.empty() ? "" : ": " + error) + ")";
            }
        }
        if (st != SB_OK && unflushed)
            log::Logger::get().write(log::Level::Warn, "delivery", destination(),
                                     "flush failed (" + std::string(sb::status_name(st)) +
                                         (error.empty() ? "" : ": " + error) + "); " + std::to_string(unflushed) +
                                         " record(s) will be delivered again");
    }

    // 2. Completions reported since.
    {
        std::lock_guard lock(pending_mutex_);
        for (Inflight& f : inflight_) {
            if (f.expired || f.erased || f.status != SB_PENDING) continue;
            auto it = completed_.find(f.delivery_id);
            if (it == completed_.end()) continue;
            f.status = it->second.first;
            if (f.status == SB_PENDING) f.status = SB_ERR_INTERNAL; // not a completion status
            if (f.status != SB_OK)
                f.error = it->second.second;
            else
                f.receipt = receipt_text(it->second.second);
            completed_.erase(it);
            moved = true;
        }
    }

    // 3. Settle the prefix that is done, in sequence order.
    std::vector<Delivered> delivered;
    std::vector<store::DeadLetter> dead;
    std::size_t done = 0;
    for (; done < inflight_.size(); ++done) {
        Inflight& f = inflight_[done];
        const OutboxEntry& e = *f.entry;
        auto dead_letter = [&](const std::string& why, std::uint32_t attempts) {
            store::DeadLetter d;
            d.destination = destination();
            d.seq = e.seq;
            d.record_id = e.record_id;
            d.chunk = e.chunk;
            d.expires_at = e.expires_at;
            d.dead_at = now;
            d.attempts = attempts;
            d.error = why;
            encode_entry(e, d.payload);
            dead.push_back(std::move(d));
        };
        if (f.expired) {
            dead_letter("expired before delivery", attempts_[e.seq]);
            continue;
        }
        if (f.status == SB_OK && !f.erased) {
            delivered.push_back({e.seq, e.record_id, f.attempt, std::move(f.receipt)});
            continue;
        }
        if (f.erased || journal_.erased(e.record_id)) {
            // Erased on request: not delivered, or handed over before the
            // erasure and not settled since. Nothing of it is kept (no dead
            // letter); a late completion is not wanted; the erasure sent
            // the destination its erase notice.
            if (!f.erased) {
                std::lock_guard lock(pending_mutex_);
                waiting_.erase(f.delivery_id);
                completed_.erase(f.delivery_id);
            }
            continue;
        }
        if (f.status == SB_PENDING) {
            if (steady_ms() - f.since < kPendingTimeoutMs) break;
            // No completion in time: hand it (and what follows) over again.
            // Not a failed attempt: a feed's client may be away for hours.
            log::Logger::get().write(log::Level::Warn, "delivery", destination(),
                                     "seq " + std::to_string(e.seq) + " (" + e.record_id + ") not completed within " +
                                         std::to_string(kPendingTimeoutMs / 1000) + "s; handing " +
                                         std::to_string(inflight_.size() - done) + " delivery(ies) over again");
            if (metrics_) metrics_->add(destination(), "pending_timeouts", 1);
            abandon_from(done);
            moved = true;
            break;
        }
        sb_status st = f.status;
        bool permanent = st == SB_ERR_PERMANENT || st == SB_ERR_INVALID || st == SB_ERR_UNSUPPORTED;
        std::string why = std::string(sb::status_name(st)) + (f.error.empty() ? "" : ": " + f.error);
        if (permanent || static_cast<int>(f.attempt) >= config_.max_attempts) {
            log::Logger::get().write(log::Level::Warn, "delivery", destination(),
                                     "seq " + std::to_string(e.seq) + " (" + e.record_id +
                                         ") dead-lettered after " + std::to_string(f.attempt) +
                                         " attempt(s): " + why);
            dead_letter(why, f.attempt);
            continue;
        }
        attempts_[e.seq] = f.attempt;
        std::int64_t wait = backoff_ms(f.attempt);
        retry_at_ = steady_ms() + wait;
        log::Logger::get().write(log::Level::Warn, "delivery", destination(),
                                 "seq " + std::to_string(e.seq) + " (" + e.record_id + ") attempt " +
                                     std::to_string(f.attempt) + " failed (" + why + "); retrying in " +
                                     std::to_string(wait) + "ms");
        if (metrics_) metrics_->add(destination(), "retries", 1);
        abandon_from(done);
        moved = true;
        break;
    }
    if (done == 0) return moved;
    std::uint64_t acked = inflight_[done - 1].entry->seq;
    if (!attempts_.empty())
        for (std::size_t i = 0; i < done; ++i) attempts_.erase(inflight_[i].entry->seq);
    bool room = false;
    std::vector<std::shared_ptr<sb_record>> spent;
    {
        std::lock_guard lock(mutex_);
        const bool keep = behind_;
        if (keep) spent.reserve(done);
        for (std::size_t i = 0; i < done && !queue_.empty(); ++i) {
            // Behind: the copy goes back to the filler, unless the plugin
            // kept a hold of it.
            if (keep && queue_.front().record && queue_.front().record.use_count() == 1 &&
                !queue_.front().record->is_rendered)
                spent.push_back(std::move(queue_.front().record));
            queue_.pop_front();
        }
        room = behind_ && queue_.size() < kFillAhead;
    }
    keep_spent(spent);
    if (room) fill_wake_.notify_all();
    inflight_.erase(inflight_.begin(), inflight_.begin() + static_cast<std::ptrdiff_t>(done));
    if (metrics_) {
        if (!delivered.empty()) metrics_->add(destination(), "records_out", delivered.size());
        if (!dead.empty()) metrics_->add(destination(), "dead_lettered", dead.size());
    }
    record_progress(acked, std::move(dead), std::move(delivered));
    return true;
}

void audit_deliveries(audit::AuditLog& audit, std::int64_t now, const std::string& dest,
                      const std::vector<Delivered>& delivered, std::string& detail) {
    for (std::size_t i = 0; i < delivered.size();) {
        const Delivered& first = delivered[i];
        // A run of consecutive seqs delivered together at one attempt, with
        // no receipt: one entry for all of them, record "-"; which record
        // each seq is, its disclose entry says.
        std::size_t end = i + 1;
        if (first.receipt.empty())
            while (end < delivered.size() && delivered[end].receipt.empty() &&
                   delivered[end].attempt == first.attempt && delivered[end].seq == delivered[end - 1].seq + 1)
                ++end;
        detail.clear();
        audit::append_attr(detail, "destination", dest);
        if (end - i >= 2) {
            audit::append_attr(detail, "seqs", audit::seq_run(first.seq, delivered[end - 1].seq));
            audit::append_attr(detail, "attempt", std::to_string(first.attempt));
            audit.append(now, audit::kind::deliver, "", detail);
        } else {
            audit::append_attr(detail, "seq", std::to_string(first.seq));
            audit::append_attr(detail, "attempt", std::to_string(first.attempt));
            if (!first.receipt.empty()) audit::append_attr(detail, "receipt", first.receipt);
            audit.append(now, audit::kind::deliver, first.record_id, detail);
        }
        i = end;
    }
}

void DeliveryWorker::record_progress(std::uint64_t acked, std::vector<store::DeadLetter> dead,
                                     std::vector<Delivered> delivered) {
    acked_ = acked;
    std::int64_t now = clock_();
    std::string dest = destination();
    // Lazy: shares the next commit (an ingest's, usually) rather than
    // costing one of its own per acknowledgement; lost in a crash, the
    // records are delivered again.
    journal_.submit_lazy({[acked, dest, now, dead = std::move(dead), delivered = std::move(delivered)](
                         store::Txn& txn, audit::AuditLog& audit) {
                         txn.set_acked(dest, acked);
                         std::string detail;
                         audit_deliveries(audit, now, dest, delivered, detail);
                         for (const auto& d : dead) {
                             txn.put_dead_letter(d);
                             detail.clear();
                             audit::append_attr(detail, "destination", dest);
                             audit::append_attr(detail, "seq", std::to_string(d.seq));
                             audit::append_attr(detail, "attempts", std::to_string(d.attempts));
                             audit.append(now, "dead_letter", d.record_id, detail);
                         }
                     },
                     {}});
}

void DeliveryWorker::retry_dead_letters() {
    std::vector<store::DeadLetter> asked;
    try {
        asked = journal_.store().retry_requested(destination());
    } catch (const std::exception& e) {
        log::error("delivery", destination() + ": cannot read dead letters: " + e.what());
        return;
    }
    for (const auto& d : asked) {
        OutboxEntry e;
        std::size_t pos = 0;
        EntryRef ref;
        EntryForm form = decode_entry(d.payload, pos, e, ref);
        if (form == EntryForm::Bad) continue;
        e.seq = d.seq;
        e.record_id = d.record_id;
        e.chunk = d.chunk;
        e.index = 0;
        e.expires_at = d.expires_at;
        if (form == EntryForm::Reference) {
            // Dead-lettered because its copy could not be made: try again
            // (the key may be configured again).
            std::int64_t chunk_id = 0;
            if (!parse_record_id(e.record_id, chunk_id, e.index)) continue;
            Journal::ChunkCache chunk;
            journal_.rebuild(e, ref, chunk);
        }
        std::string error, receipt;
        std::uint32_t attempt = d.attempts + 1;
        if (journal_.erased(e.record_id)) continue; // the erasure deletes the dead letter
        sb_status st = SB_ERR_PERMANENT;
        if (e.expires_at <= clock_())
            error = "expired before delivery";
        else if (!e.record || e.profile == kErasedProfile)
            error = e.unbuilt ? e.unbuilt->why : "its record was erased";
        else
            st = deliver_one(e, attempt, error, receipt);
        if (st == SB_OK) st = instance_.flush(error);
        std::int64_t now = clock_();
        std::string dest = destination();
        std::string why = std::string(sb::status_name(st)) + (error.empty() ? "" : ": " + error);
        std::int64_t id = d.id;
        receipt = receipt_text(receipt);
        journal_.submit({[=](store::Txn& txn, audit::AuditLog& audit) {
                             std::string detail;
                             audit::append_attr(detail, "destination", dest);
                             audit::append_attr(detail, "seq", std::to_string(e.seq));
                             audit::append_attr(detail, "attempt", std::to_string(attempt));
                             audit::append_attr(detail, "retry", "dead_letter");
                             if (st == SB_OK && !receipt.empty()) audit::append_attr(detail, "receipt", receipt);
                             if (st == SB_OK) {
                                 txn.delete_dead_letter(id);
                                 audit.append(now, audit::kind::deliver, e.record_id, detail);
                             } else {
                                 txn.update_dead_letter(id, attempt, why);
                             }
                         },
                         {}});
        log::Logger::get().write(st == SB_OK ? log::Level::Info : log::Level::Warn, "delivery", dest,
                                 "dead letter " + std::to_string(id) + " (" + e.record_id + ") retried: " +
                                     (st == SB_OK ? std::string("delivered") : why));
    }
}

} // namespace switchboard::pipeline
