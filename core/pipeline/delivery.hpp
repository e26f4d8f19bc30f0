#pragma once

// One destination's delivery: takes its outbox in sequence order and hands
// each minimised record to the plugin, at least once, with the record id as
// the idempotency key; retries with exponential backoff and jitter; dead-
// letters after max_attempts or on a permanent error; records progress (and
// an audit entry per delivery, with the receipt the plugin completed it with,
// e.g. a case reference) through the journal.
//
// Up to `batch` deliveries are outstanding at once: a plugin that answers
// SB_PENDING (a feed waiting for its client's acknowledgement) gets the next
// records without waiting for the first one's completion. Completions are
// settled in sequence order: the prefix that is done becomes progress; a
// failure retries from the first unsettled delivery after a backoff. An
// SB_PENDING delivery not completed within kPendingTimeoutMs is handed to
// the plugin again (same sequence and record id), without counting against
// max_attempts: a department offline for hours must not dead-letter its
// backlog.
//
// Memory stays flat whatever the backlog: at most kMaxQueued entries are held;
// a destination that is behind (down for hours) reads its outbox from the
// store, kFillBatch entries at a time, while the others keep flowing. The
// reading (and making the copies again) is done by a second thread of the
// worker, the filler, up to kFillAhead entries ahead of the deliveries: a
// destination catching up is handed records while the next are made.

#include "pipeline/journal.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>

namespace switchboard::pipeline {

// Delivery ids handed to a plugin and not settled: a sorted vector, since
// they are handed out in increasing order and most are settled at once (a
// plugin that returns SB_OK) — an insert and an erase at the back, with no
// allocation once it has grown to the window.
class DeliveryIds {
public:
    void insert(std::uint64_t id) {
        if (ids_.empty() || ids_.back() < id) ids_.push_back(id);
        else if (auto at = std::lower_bound(ids_.begin(), ids_.end(), id); at == ids_.end() || *at != id)
            ids_.insert(at, id);
    }
    // 1 if `id` was there, else 0.
    std::size_t erase(std::uint64_t id) {
        if (!ids_.empty() && ids_.back() == id) {
            ids_.pop_back();
            return 1;
        }
        auto at = std::lower_bound(ids_.begin(), ids_.end(), id);
        if (at == ids_.end() || *at != id) return 0;
        ids_.erase(at);
        return 1;
    }

private:
    std::vector<std::uint64_t> ids_;
};

// A receipt (delivery or erase) as it goes into the audit trail: one line
// (control characters become spaces), at most kReceiptMax bytes. Receipts are
// references (a case number, a file name), never personal data: see
// sb_host_api.complete.
inline constexpr std::size_t kReceiptMax = 128;
std::string receipt_text(std::string_view receipt);

// A delivery settled as done, for its audit entry (not the record: it is
// freed by the worker, not on the journal's writer thread).
struct Delivered {
    std::uint64_t seq = 0;
    std::string record_id;
    std::uint32_t attempt = 0;
    std::string receipt; // "" when the plugin gave none
};

// The `deliver` entries for `delivered` (one destination's, settled in seq
// order): one per delivery that has a receipt or stands alone ("seq=N",
// with its record id), and one per run of consecutive seqs delivered at the
// same attempt ("seqs=F-L", record "-"; the disclose entries say which
// record each seq is). `scratch` is reused for the details.
void audit_deliveries(audit::AuditLog& audit, std::int64_t now, const std::string& destination,
                      const std::vector<Delivered>& delivered, std::string& scratch);

class DeliveryWorker : public OutboxListener {
public:
    // Entries held in memory at most. Two of the journal's largest groups
    // (Journal::Options::max_group): a worker still busy with one group's
    // entries takes the next group's as offered, rather than reading them
    // back from the store and making their copies again.
    static constexpr std::size_t kMaxQueued = 16384;
    // Entries read from the store at a time by a worker that is behind:
    // with kFillAhead, what a worker catching up holds (and the spent
    // copies it keeps) stays a few MiB. (4,096 and 8,192 drained a backlog
    // about a tenth faster, and held twice as much per destination.)
    static constexpr std::size_t kFillBatch = 1024;
    // The filler reads more while fewer than this are queued (handed over
    // or not): one batch being delivered while the next is made.
    static constexpr std::size_t kFillAhead = 2 * kFillBatch;
    static_assert(kFillAhead + kFillBatch <= kMaxQueued);
    // How long a plugin may take to complete an SB_PENDING delivery before
    // it is handed the same record again.
    static constexpr std::int64_t kPendingTimeoutMs = 60'000;

    DeliveryWorker(plugin::Instance& instance, Journal& journal, Clock clock,
                   plugin::Metrics* metrics);
    ~DeliveryWorker() override;

    void start();
    void stop();

    void offer(std::vector<OutboxEntry>&& entries) override;
    bool wants_copies() const override { return !behind_now_.load(std::memory_order_relaxed); }
    bool wants_json() const override { return json_records_; }
    void complete(std::uint64_t id, sb_status status, const char* receipt) override;

    const std::string& destination() const;

private:
    // A delivery handed to the plugin and not settled yet; inflight_[i] is
    // queue_[i].
    struct Inflight {
        // queue_[i] itself (not a copy): a deque keeps its elements in place
        // as others are added, and the worker pops it only once settled.
        const OutboxEntry* entry = nullptr;
        std::uint64_t delivery_id = 0;
        std::uint32_t attempt = 0;
        sb_status status = SB_PENDING; // SB_OK once flushed or completed
        bool unflushed = false;        // deliver said SB_OK; the next flush decides
        bool expired = false;          // not handed over: its retention ended first
        bool erased = false;           // erased on request: not handed over, or no longer wanted
        std::string error;
        std::string receipt;           // from complete(), once SB_OK
        std::int64_t since = 0;        // steady ms when handed over
    };
    void set_behind(bool behind) { // with mutex_ held
        behind_ = behind;
        behind_now_.store(behind, std::memory_order_relaxed);
    }
    void run();
    void run_filler();               // the filler thread: fill() while behind
    // Adds `copies` to spent_ (up to kFillBatch; the rest are freed).
    void keep_spent(std::vector<std::shared_ptr<sb_record>>& copies);
    bool fill();                     // queue from the store when behind
    bool deliver_some();             // true if anything moved
    void abandon_from(std::size_t i); // forget deliveries i.. (they are handed over again)
    // One delivery, waiting for an SB_PENDING completion (dead-letter retries).
    sb_status deliver_one(const OutboxEntry& e, std::uint32_t attempt, std::string& error,
                          std::string& receipt);
    void retry_dead_letters();
    std::int64_t backoff_ms(std::uint32_t attempt);
    void record_progress(std::uint64_t acked, std::vector<store::DeadLetter> dead,
                         std::vector<Delivered> delivered);

    plugin::Instance& instance_;
    Journal& journal_;
    Clock clock_;
    plugin::Metrics* metrics_;
    const config::InstanceConfig& config_;
    const bool json_records_; // the plugin declares SB_CAP_JSON_RECORDS

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<OutboxEntry> queue_; // seq order, contiguous from next_
    std::uint64_t tail_ = 0;        // highest seq queued or done
    bool behind_ = true;            // the store may hold entries not queued
    std::atomic<bool> behind_now_{true}; // behind_, read without the lock (wants_copies)
    bool dropped_ = false;          // an offer was declined since the last fill
    bool stopping_ = false;
    bool completions_ready_ = false; // complete() since the worker last looked
    std::condition_variable fill_wake_; // the filler: behind, with room
    std::thread thread_;
    std::thread filler_;

    // Worker-thread state.
    std::uint64_t acked_ = 0;                       // committed progress
    std::map<std::uint64_t, std::uint32_t> attempts_; // seq -> failed attempts so far
    std::int64_t retry_at_ = 0;                     // backoff: not before (steady ms)
    std::uint64_t next_delivery_id_ = 1;
    std::deque<Inflight> inflight_;
    std::int64_t last_retry_check_ = 0;
    std::mt19937_64 rng_{std::random_device{}()};

    // Copies delivered while behind, given back by the worker for the
    // filler to make its next copies in (their buffers reused, and freed by
    // the thread that made them): at most kFillBatch, none kept once the
    // worker has caught up.
    std::mutex spent_mutex_;
    std::vector<std::shared_ptr<sb_record>> spent_;

    // SB_PENDING deliveries awaiting complete().
    std::mutex pending_mutex_;
    std::condition_variable pending_cv_;
    DeliveryIds waiting_; // ids handed out and not abandoned
    std::map<std::uint64_t, std::pair<sb_status, std::string>> completed_;
};

} // namespace switchboard::pipeline
