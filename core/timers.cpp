#include "timers.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <vector>

namespace switchboard {

namespace {

constexpr int kError = 4;
constexpr int kDebug = 1;

// Long waits are cut into slices: steady_clock counts nanoseconds, so a wait of
// "practically forever" in milliseconds would overflow inside wait_for.
constexpr std::int64_t kMaxWaitMs = 60 * 60 * 1000;
// How often a custom clock is re-read while waiting (it can jump without notice).
constexpr std::int64_t kCustomClockPollMs = 20;

std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
    if (b > 0 && a > std::numeric_limits<std::int64_t>::max() - b) return std::numeric_limits<std::int64_t>::max();
    return a + b;
}

std::int64_t steady_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

} // namespace

TimerService::TimerService(LogFn log, Clock clock)
    : log_(std::move(log)), clock_(std::move(clock)), custom_clock_(static_cast<bool>(clock_)) {}

TimerService::~TimerService() { stop(); }

void TimerService::log(int level, const std::string& message) const noexcept {
    if (!log_) return;
    try {
        log_(level, message);
    } catch (...) {
        // A failing log sink must not stop the timers.
    }
}

std::int64_t TimerService::now() const { return custom_clock_ ? clock_() : steady_ms(); }

void TimerService::start() {
    std::unique_lock lock(mutex_);
    if (alive_ && std::this_thread::get_id() == thread_id_) {
        stopping_ = false; // stop() then start() from a callback: just keep running
        return;
    }
    if (alive_ && !stopping_) return;
    idle_.wait(lock, [&] { return !alive_; }); // a stop() in progress
    if (thread_.joinable()) {
        // Stopped from inside a callback earlier: reap that thread before starting anew.
        std::thread old = std::move(thread_);
        lock.unlock();
        old.join();
        lock.lock();
    }
    if (alive_) return; // another start() won meanwhile
    stopping_ = false;
    alive_ = true;
    thread_ = std::thread([this] { run(); });
    thread_id_ = thread_.get_id();
}

void TimerService::stop() {
    std::unique_lock lock(mutex_);
    if (alive_) {
        stopping_ = true;
        wake_.notify_all();
        if (std::this_thread::get_id() == thread_id_) return; // the loop ends after this callback
        // Every caller waits, not just the one that joins, so none returns early.
        idle_.wait(lock, [&] { return !alive_; });
    }
    if (thread_.joinable()) {
        std::thread t = std::move(thread_);
        lock.unlock();
        t.join();
    }
}

std::uint64_t TimerService::add(std::int64_t delay_ms, std::int64_t interval_ms, Fn fn,
                                const std::string& group) {
    if (!fn || delay_ms < 0 || interval_ms < 0) {
        log(kError, "refused timer for " + group + ": " +
                        (!fn ? std::string("no callback") : std::string("negative delay or interval")));
        return 0;
    }
    auto timer = std::make_shared<Timer>();
    timer->group = group;
    timer->fn = std::move(fn);
    timer->interval = interval_ms;
    std::lock_guard lock(mutex_);
    timer->id = next_id_++;
    timer->due = saturating_add(now(), delay_ms);
    queue_.emplace(timer->due, timer->id);
    timers_.emplace(timer->id, timer);
    wake_.notify_all();
    return timer->id;
}

void TimerService::erase_locked(std::uint64_t id) {
    auto it = timers_.find(id);
    if (it == timers_.end()) return;
    queue_.erase({it->second->due, id});
    timers_.erase(it);
}

void TimerService::wait_not_running_locked(std::unique_lock<std::mutex>& lock,
                                           const std::set<std::uint64_t>& ids) {
    // On the timer thread the running callback is the caller itself: waiting would deadlock,
    // and nothing else can be running.
    if (alive_ && std::this_thread::get_id() == thread_id_) return;
    idle_.wait(lock, [&] { return running_ == 0 || ids.count(running_) == 0; });
}

void TimerService::cancel(std::uint64_t id) {
    // Declared before the lock so that the callbacks (and what they captured) are destroyed
    // after it is released: their destructors may call back into this service.
    std::vector<std::shared_ptr<Timer>> dropped;
    std::unique_lock lock(mutex_);
    if (auto it = timers_.find(id); it != timers_.end()) dropped.push_back(it->second);
    erase_locked(id);
    wake_.notify_all();
    wait_not_running_locked(lock, {id});
}

void TimerService::cancel_group(const std::string& group) {
    std::vector<std::shared_ptr<Timer>> dropped;
    std::unique_lock lock(mutex_);
    std::set<std::uint64_t> ids;
    for (const auto& [id, timer] : timers_)
        if (timer->group == group) {
            ids.insert(id);
            dropped.push_back(timer);
        }
    for (auto id : ids) erase_locked(id);
    wake_.notify_all();
    wait_not_running_locked(lock, ids);
    if (!ids.empty()) log(kDebug, "cancelled " + std::to_string(ids.size()) + " timer(s) of " + group);
}

void TimerService::run() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        if (queue_.empty()) {
            wake_.wait(lock);
            continue;
        }
        const auto [due, id] = *queue_.begin();
        const std::int64_t t = now();
        if (due > t) {
            std::int64_t wait = std::min(due - t, custom_clock_ ? kCustomClockPollMs : kMaxWaitMs);
            wake_.wait_for(lock, std::chrono::milliseconds(wait));
            continue; // re-check everything: stop, cancel, an earlier timer
        }
        queue_.erase(queue_.begin());
        auto it = timers_.find(id);
        if (it == timers_.end()) continue;
        std::shared_ptr<Timer> timer = it->second;
        running_ = id;
        lock.unlock();

        bool threw = false;
        try {
            timer->fn();
        } catch (...) {
            // Not the exception's text: callbacks work on citizen records and messages may quote them.
            threw = true;
        }
        if (threw)
            log(kError, "timer " + std::to_string(id) + " of " + timer->group +
                            " threw an exception; it keeps its schedule");

        lock.lock();
        running_ = 0;
        if (timers_.count(id)) { // not cancelled while it ran
            if (timer->interval > 0) {
                // From the previous due time keeps the cadence; never earlier than now, so an
                // overrun is not followed by a burst of catch-up calls.
                timer->due = std::max(now(), saturating_add(due, timer->interval));
                queue_.emplace(timer->due, id);
            } else {
                timers_.erase(id);
            }
        }
        idle_.notify_all();
        if (timer.use_count() == 1) {
            // Last reference: destroy the callback outside the lock (see cancel()).
            lock.unlock();
            timer.reset();
            lock.lock();
        }
    }
    alive_ = false;
    thread_id_ = {}; // ids of finished threads are reused
    idle_.notify_all();
}

} // namespace switchboard
