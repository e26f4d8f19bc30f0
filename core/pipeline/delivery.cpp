#include "pipeline/delivery.hpp"

#include "log.hpp"
#include "pipeline/outbox_codec.hpp"
#include "store/codec.hpp"

#include <switchboard/plugin.hpp>

#include <chrono>

namespace switchboard::pipeline {

namespace {

std::int64_t steady_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// How long a plugin may take to complete an SB_PENDING delivery.
constexpr std::int64_t kPendingTimeoutMs = 60'000;

} // namespace

DeliveryWorker::DeliveryWorker(plugin::Instance& instance, Journal& journal, Clock clock,
                               plugin::Metrics* metrics)
    : instance_(instance), journal_(journal), clock_(std::move(clock)), metrics_(metrics),
      config_(instance.config()) {}

DeliveryWorker::~DeliveryWorker() { stop(); }

const std::string& DeliveryWorker::destination() const { return config_.name; }

void DeliveryWorker::start() {
    acked_ = journal_.store().acked(destination());
    {
        std::lock_guard lock(mutex_);
        tail_ = acked_;
        behind_ = true;
        stopping_ = false;
    }
    thread_ = std::thread([this] { run(); });
}

void DeliveryWorker::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void DeliveryWorker::offer(std::vector<OutboxEntry>&& entries) {
    if (entries.empty()) return;
    {
        std::lock_guard lock(mutex_);
        if (behind_ || queue_.size() + entries.size() > kMaxQueued || entries.front().seq != tail_ + 1) {
            // The entries are in the store; the worker reads them from there.
            behind_ = true;
            dropped_ = true;
        } else {
            tail_ = entries.back().seq;
            for (auto& e : entries) queue_.push_back(std::move(e));
        }
    }
    wake_.notify_all();
}

void DeliveryWorker::complete(std::uint64_t id, sb_status status, const char* receipt) {
    {
        std::lock_guard lock(pending_mutex_);
        completed_[id] = {status, receipt ? receipt : ""};
    }
    pending_cv_.notify_all();
}

bool DeliveryWorker::fill() {
    std::uint64_t from;
    {
        std::lock_guard lock(mutex_);
        if (!behind_) return false;
        dropped_ = false;
        from = tail_;
    }
    auto rows = journal_.store().outbox_after(destination(), from, 8);
    std::vector<OutboxEntry> loaded;
    for (const auto& row : rows) {
        std::size_t pos = 0;
        for (std::uint32_t k = 0; k < row.count; ++k) {
            OutboxEntry e;
            e.seq = row.first_seq + k;
            e.chunk = row.chunk;
            e.index = outbox_index(row.indexes, k);
            e.record_id = record_id(row.chunk, e.index);
            e.expires_at = row.expires_at;
            e.record = std::make_shared<sb_record>();
            if (row.payloads.empty() || !decode_entry(row.payloads, pos, e)) {
                log::error("delivery", destination() + ": outbox row at seq " +
                                           std::to_string(row.first_seq) + " is unreadable; skipped");
                break;
            }
            if (e.seq > from && loaded.size() < kMaxQueued) loaded.push_back(std::move(e));
        }
    }
    std::lock_guard lock(mutex_);
    if (loaded.empty()) {
        // Caught up, unless a commit was offered (and dropped) meanwhile.
        if (!dropped_) behind_ = false;
        return false;
    }
    for (auto& e : loaded) {
        if (e.seq <= tail_) continue;
        tail_ = e.seq;
        queue_.push_back(std::move(e));
    }
    return true;
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
        bool has;
        {
            std::lock_guard lock(mutex_);
            has = !queue_.empty();
        }
        if (!has && !fill()) {
            if (steady_ms() - last_retry_check_ > 1000) {
                last_retry_check_ = steady_ms();
                retry_dead_letters();
            }
            std::unique_lock lock(mutex_);
            wake_.wait_for(lock, std::chrono::milliseconds(500),
                           [&] { return stopping_ || !queue_.empty() || (behind_ && dropped_); });
            continue;
        }
        deliver_some();
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
    d.record = e.record.get();
    sb_status st = instance_.deliver(d, error);
    if (st != SB_PENDING) return st;
    // Asynchronous acknowledgement: wait for the plugin's complete().
    std::unique_lock lock(pending_mutex_);
    bool done = pending_cv_.wait_for(lock, std::chrono::milliseconds(kPendingTimeoutMs),
                                     [&] { return completed_.count(d.delivery_id) > 0; });
    if (!done) {
        error = "no completion within " + std::to_string(kPendingTimeoutMs / 1000) + "s";
        return SB_ERR_TRANSIENT;
    }
    auto [status, text] = completed_[d.delivery_id];
    completed_.erase(d.delivery_id);
    receipt = text;
    return status;
}

void DeliveryWorker::deliver_some() {
    std::vector<OutboxEntry> window;
    {
        std::lock_guard lock(mutex_);
        std::size_t n = std::min<std::size_t>(queue_.size(), static_cast<std::size_t>(config_.batch));
        window.assign(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    }
    std::vector<std::pair<OutboxEntry, std::uint32_t>> delivered;
    std::vector<store::DeadLetter> dead;
    std::size_t done = 0; // entries at the front that are settled
    const std::int64_t now = clock_();
    bool failed = false;
    for (const OutboxEntry& e : window) {
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
        if (e.expires_at <= now) {
            // Its retention period ended before it could be delivered.
            dead_letter("expired before delivery", attempts_[e.seq]);
            ++done;
            continue;
        }
        std::uint32_t attempt = attempts_[e.seq] + 1;
        std::string error, receipt;
        sb_status st = deliver_one(e, attempt, error, receipt);
        if (st == SB_OK) {
            delivered.emplace_back(e, attempt);
            ++done;
            continue;
        }
        bool permanent = st == SB_ERR_PERMANENT || st == SB_ERR_INVALID || st == SB_ERR_UNSUPPORTED;
        std::string why = std::string(sb::status_name(st)) + (error.empty() ? "" : ": " + error);
        if (permanent || static_cast<int>(attempt) >= config_.max_attempts) {
            log::Logger::get().write(log::Level::Warn, "delivery", destination(),
                                     "seq " + std::to_string(e.seq) + " (" + e.record_id +
                                         ") dead-lettered after " + std::to_string(attempt) +
                                         " attempt(s): " + why);
            dead_letter(why, attempt);
            ++done;
            continue;
        }
        attempts_[e.seq] = attempt;
        std::int64_t wait = backoff_ms(attempt);
        retry_at_ = steady_ms() + wait;
        log::Logger::get().write(log::Level::Warn, "delivery", destination(),
                                 "seq " + std::to_string(e.seq) + " (" + e.record_id + ") attempt " +
                                     std::to_string(attempt) + " failed (" + why + "); retrying in " +
                                     std::to_string(wait) + "ms");
        if (metrics_) metrics_->add(destination(), "retries", 1);
        failed = true;
        break;
    }
    (void)failed;
    if (!delivered.empty()) {
        // Delivered means durable at the plugin: flush before counting them.
        std::string error;
        sb_status st = instance_.flush(error);
        if (st != SB_OK) {
            std::uint64_t first = delivered.front().first.seq;
            std::uint32_t attempt = ++attempts_[first];
            std::int64_t wait = backoff_ms(attempt);
            retry_at_ = steady_ms() + wait;
            log::Logger::get().write(log::Level::Warn, "delivery", destination(),
                                     "flush failed (" + std::string(sb::status_name(st)) +
                                         (error.empty() ? "" : ": " + error) + "); " +
                                         std::to_string(delivered.size()) +
                                         " record(s) will be delivered again in " + std::to_string(wait) + "ms");
            // Keep only what settled before the first unflushed delivery.
            std::size_t keep = 0;
            while (keep < window.size() && window[keep].seq < first) ++keep;
            done = keep;
            delivered.clear();
            dead.erase(std::remove_if(dead.begin(), dead.end(),
                                      [&](const store::DeadLetter& d) { return d.seq >= first; }),
                       dead.end());
        }
    }
    if (done == 0) return;
    std::uint64_t acked = window[done - 1].seq;
    {
        std::lock_guard lock(mutex_);
        for (std::size_t i = 0; i < done && !queue_.empty(); ++i) queue_.pop_front();
    }
    for (std::size_t i = 0; i < done; ++i) attempts_.erase(window[i].seq);
    if (metrics_) {
        if (!delivered.empty()) metrics_->add(destination(), "records_out", delivered.size());
        if (!dead.empty()) metrics_->add(destination(), "dead_lettered", dead.size());
    }
    record_progress(acked, std::move(dead), std::move(delivered));
}

void DeliveryWorker::record_progress(std::uint64_t acked, std::vector<store::DeadLetter> dead,
                                     std::vector<std::pair<OutboxEntry, std::uint32_t>> delivered) {
    acked_ = acked;
    std::int64_t now = clock_();
    std::string dest = destination();
    journal_.submit({[acked, dest, now, dead = std::move(dead), delivered = std::move(delivered)](
                         store::Txn& txn, audit::AuditLog& audit) {
                         txn.set_acked(dest, acked);
                         std::string detail;
                         for (const auto& [e, attempt] : delivered) {
                             detail.clear();
                             audit::append_attr(detail, "destination", dest);
                             audit::append_attr(detail, "seq", std::to_string(e.seq));
                             audit::append_attr(detail, "attempt", std::to_string(attempt));
                             audit.append(now, audit::kind::deliver, e.record_id, detail);
                         }
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
        e.record = std::make_shared<sb_record>();
        if (!decode_entry(d.payload, pos, e)) continue;
        e.seq = d.seq;
        e.record_id = d.record_id;
        e.chunk = d.chunk;
        e.expires_at = d.expires_at;
        std::string error, receipt;
        std::uint32_t attempt = d.attempts + 1;
        sb_status st = e.expires_at <= clock_() ? SB_ERR_PERMANENT : deliver_one(e, attempt, error, receipt);
        if (st == SB_OK) st = instance_.flush(error);
        std::int64_t now = clock_();
        std::string dest = destination();
        std::string why = std::string(sb::status_name(st)) + (error.empty() ? "" : ": " + error);
        std::int64_t id = d.id;
        journal_.submit({[=](store::Txn& txn, audit::AuditLog& audit) {
                             std::string detail;
                             audit::append_attr(detail, "destination", dest);
                             audit::append_attr(detail, "seq", std::to_string(e.seq));
                             audit::append_attr(detail, "attempt", std::to_string(attempt));
                             audit::append_attr(detail, "retry", "dead_letter");
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
