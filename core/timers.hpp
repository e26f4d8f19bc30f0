#pragma once
// Timers for the core and for plugins (pollers, retention sweeps, retries): one thread,
// callbacks one at a time, and cancellation that plugins can rely on before they unload.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

namespace switchboard {

class TimerService {
public:
    using Fn = std::function<void()>;
    using Clock = std::function<std::int64_t()>; // milliseconds; default: steady clock
    // level: 0 trace, 1 debug, 2 info, 3 warn, 4 error (as sb_log_level).
    using LogFn = std::function<void(int level, const std::string& message)>;

    // A custom clock may jump without telling us, so with one the service re-reads it at
    // least every 20 ms while waiting.
    explicit TimerService(LogFn log = {}, Clock clock = {});
    ~TimerService(); // stops; must not run on the timer thread (from a callback)
    TimerService(const TimerService&) = delete;
    TimerService& operator=(const TimerService&) = delete;

    // Starts the timer thread; no-op if running. Timers added before start() are kept and
    // fire once it runs (at once if already due).
    void start();
    // No callback runs after it returns; timers are kept for a later start(). From inside a
    // callback it only asks the thread to finish after that callback (the join happens at the
    // next start(), stop() or destruction).
    void stop();

    // Calls fn after delay_ms, then every interval_ms if > 0. Returns an id > 0, or 0 (and logs
    // why) if fn is empty or a time is negative. group = owner tag (e.g. instance name).
    // A repeating timer that overruns does not pile up: next due = max(now, due + interval).
    // An exception from fn is logged (level 4) and the timer keeps its schedule.
    std::uint64_t add(std::int64_t delay_ms, std::int64_t interval_ms, Fn fn, const std::string& group);

    // From another thread: when it returns, fn is not running and never runs again.
    // From inside fn (the timer thread): prevents future runs only, no deadlock.
    // Unknown or finished ids are ignored.
    void cancel(std::uint64_t id);
    // Same guarantees, for every timer of the group.
    void cancel_group(const std::string& group);

private:
    struct Timer {
        std::uint64_t id = 0;
        std::string group;
        Fn fn;
        std::int64_t due = 0;
        std::int64_t interval = 0;
    };

    void run();
    void log(int level, const std::string& message) const noexcept;
    std::int64_t now() const;
    void erase_locked(std::uint64_t id);
    void wait_not_running_locked(std::unique_lock<std::mutex>& lock, const std::set<std::uint64_t>& ids);

    LogFn log_;
    Clock clock_;
    bool custom_clock_ = false;

    std::mutex mutex_;
    std::condition_variable wake_;  // the timer thread: new timer, cancel, stop
    std::condition_variable idle_;  // cancellers: a callback finished
    std::map<std::uint64_t, std::shared_ptr<Timer>> timers_;
    std::set<std::pair<std::int64_t, std::uint64_t>> queue_; // (due, id), earliest first
    std::uint64_t next_id_ = 1;
    std::uint64_t running_ = 0;     // id of the callback in progress, 0 if none
    bool stopping_ = false;
    bool alive_ = false;            // run() has not returned
    std::thread thread_;
    std::thread::id thread_id_;     // of the live timer thread, {} when none
};

} // namespace switchboard
