// TimerService with its real thread and the real steady clock (one test drives a custom
// clock). Every wait is bounded.

#include "timers.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using switchboard::TimerService;

namespace {

template <typename Pred> bool eventually(Pred pred, std::chrono::milliseconds limit = 1500ms) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(1ms);
    }
    return pred();
}

struct LogCapture {
    std::mutex m;
    std::vector<std::pair<int, std::string>> lines;
    TimerService::LogFn fn() {
        return [this](int level, const std::string& msg) {
            std::lock_guard lock(m);
            lines.emplace_back(level, msg);
        };
    }
    int count(int level) {
        std::lock_guard lock(m);
        int n = 0;
        for (auto& l : lines) n += l.first == level;
        return n;
    }
    bool any_contains(const std::string& part) {
        std::lock_guard lock(m);
        for (auto& l : lines)
            if (l.second.find(part) != std::string::npos) return true;
        return false;
    }
};

} // namespace

TEST_CASE("a one-shot timer fires once, after its delay") {
    TimerService timers;
    timers.start();
    std::atomic<int> calls{0};
    auto t0 = std::chrono::steady_clock::now();
    std::atomic<std::int64_t> fired_after_ms{-1};
    auto id = timers.add(30, 0, [&] {
        fired_after_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - t0).count();
        ++calls;
    }, "g");
    CHECK(id > 0);
    REQUIRE(eventually([&] { return calls.load() == 1; }));
    CHECK(fired_after_ms.load() >= 29); // the clock counts whole milliseconds
    std::this_thread::sleep_for(80ms);
    CHECK(calls.load() == 1);
    timers.cancel(id); // finished ids are ignored
}

TEST_CASE("an interval timer fires repeatedly, on one thread, one callback at a time") {
    TimerService timers;
    timers.start();
    std::atomic<int> a{0}, b{0}, running{0}, overlap{0};
    std::mutex m;
    std::vector<std::thread::id> threads;
    auto body = [&](std::atomic<int>& counter) {
        if (++running > 1) ++overlap;
        {
            std::lock_guard lock(m);
            threads.push_back(std::this_thread::get_id());
        }
        std::this_thread::sleep_for(1ms);
        ++counter;
        --running;
    };
    timers.add(0, 5, [&] { body(a); }, "g");
    timers.add(2, 7, [&] { body(b); }, "g");
    REQUIRE(eventually([&] { return a.load() >= 5 && b.load() >= 5; }));
    timers.stop();
    CHECK(overlap.load() == 0);
    std::lock_guard lock(m);
    for (auto& id : threads) CHECK(id == threads.front());
    CHECK(threads.front() != std::this_thread::get_id());
}

TEST_CASE("cancel from another thread waits for a running callback and stops the timer") {
    TimerService timers;
    timers.start();
    std::atomic<bool> entered{false}, finished{false};
    std::atomic<int> calls{0};
    auto id = timers.add(0, 10, [&] {
        ++calls;
        entered = true;
        std::this_thread::sleep_for(150ms);
        finished = true;
    }, "g");
    REQUIRE(eventually([&] { return entered.load(); }));
    timers.cancel(id);
    CHECK(finished.load()); // cancel returned only after the callback did
    int after = calls.load();
    std::this_thread::sleep_for(60ms);
    CHECK(calls.load() == after);
}

TEST_CASE("cancel from inside the callback does not deadlock and stops future runs") {
    TimerService timers;
    timers.start();
    std::atomic<int> calls{0};
    std::atomic<std::uint64_t> id{0};
    std::promise<void> id_set;
    auto ready = id_set.get_future().share();
    id = timers.add(0, 5, [&, ready] {
        ready.wait_for(1s); // the id is published after add() returns
        ++calls;
        timers.cancel(id.load());
    }, "g");
    id_set.set_value();
    REQUIRE(eventually([&] { return calls.load() == 1; }));
    std::this_thread::sleep_for(50ms);
    CHECK(calls.load() == 1);
}

TEST_CASE("cancel_group cancels only that group's timers") {
    TimerService timers;
    timers.start();
    std::atomic<int> a1{0}, a2{0}, b{0};
    timers.add(0, 5, [&] { ++a1; }, "plugin-a");
    timers.add(0, 5, [&] { ++a2; }, "plugin-a");
    timers.add(0, 5, [&] { ++b; }, "plugin-b");
    REQUIRE(eventually([&] { return a1.load() >= 2 && a2.load() >= 2 && b.load() >= 2; }));
    timers.cancel_group("plugin-a");
    int x1 = a1.load(), x2 = a2.load(), y = b.load();
    std::this_thread::sleep_for(60ms);
    CHECK(a1.load() == x1);
    CHECK(a2.load() == x2);
    CHECK(b.load() > y);
    timers.cancel_group("nobody"); // no-op
}

TEST_CASE("cancel_group waits for a running callback of the group") {
    TimerService timers;
    timers.start();
    std::atomic<bool> entered{false}, finished{false};
    timers.add(0, 0, [&] {
        entered = true;
        std::this_thread::sleep_for(120ms);
        finished = true;
    }, "slow");
    REQUIRE(eventually([&] { return entered.load(); }));
    timers.cancel_group("slow");
    CHECK(finished.load());
}

TEST_CASE("an exception is logged at error level and the timer keeps its schedule") {
    LogCapture log;
    TimerService timers(log.fn());
    timers.start();
    std::atomic<int> calls{0};
    timers.add(0, 5, [&] {
        ++calls;
        throw std::runtime_error("record of Jane Citizen");
    }, "thrower");
    REQUIRE(eventually([&] { return calls.load() >= 3; }));
    timers.stop();
    CHECK(log.count(4) >= 3);
    CHECK(log.any_contains("thrower"));
    CHECK_FALSE(log.any_contains("Jane")); // exception text may hold personal data
}

TEST_CASE("stop prevents further callbacks and waits for a running one") {
    TimerService timers;
    timers.start();
    std::atomic<int> calls{0};
    std::atomic<bool> in_callback{false};
    timers.add(0, 2, [&] {
        in_callback = true;
        std::this_thread::sleep_for(20ms);
        ++calls;
        in_callback = false;
    }, "g");
    REQUIRE(eventually([&] { return calls.load() >= 1 && in_callback.load(); }));
    timers.stop();
    CHECK_FALSE(in_callback.load());
    int after = calls.load();
    std::this_thread::sleep_for(60ms);
    CHECK(calls.load() == after);
    timers.stop(); // idempotent

    // Timers survive a stop and resume on start.
    timers.start();
    REQUIRE(eventually([&] { return calls.load() > after; }));
}

TEST_CASE("timers added before start fire once started") {
    TimerService timers;
    std::atomic<int> calls{0};
    timers.add(0, 0, [&] { ++calls; }, "g");
    std::this_thread::sleep_for(30ms);
    CHECK(calls.load() == 0);
    timers.start();
    REQUIRE(eventually([&] { return calls.load() == 1; }));
}

TEST_CASE("an overrunning interval timer does not pile up catch-up calls") {
    TimerService timers;
    timers.start();
    std::mutex m;
    std::vector<std::chrono::steady_clock::time_point> at;
    timers.add(0, 10, [&] {
        std::size_t n;
        {
            std::lock_guard lock(m);
            at.push_back(std::chrono::steady_clock::now());
            n = at.size();
        }
        if (n == 1) std::this_thread::sleep_for(100ms); // overruns ten intervals
    }, "g");
    REQUIRE(eventually([&] {
        std::lock_guard lock(m);
        return at.size() >= 4;
    }));
    timers.stop();
    std::lock_guard lock(m);
    // Run 2 comes after the 100 ms overrun, runs 3 and 4 one interval apart after it
    // (>= 120 ms in all). Making up the ten missed runs would fire them back to back at
    // about 100 ms.
    CHECK(at[3] - at[0] >= 115ms);
}

TEST_CASE("invalid timers are refused with id 0") {
    LogCapture log;
    TimerService timers(log.fn());
    CHECK(timers.add(0, 0, nullptr, "g") == 0);
    CHECK(timers.add(-1, 0, [] {}, "g") == 0);
    CHECK(timers.add(0, -5, [] {}, "g") == 0);
    CHECK(log.count(4) == 3);
    auto a = timers.add(0, 0, [] {}, "g");
    auto b = timers.add(0, 0, [] {}, "g");
    CHECK(a > 0);
    CHECK(b > a);
}

TEST_CASE("a custom clock drives due times") {
    std::atomic<std::int64_t> now{1000};
    TimerService timers({}, [&] { return now.load(); });
    timers.start();
    std::atomic<int> calls{0};
    timers.add(60'000, 0, [&] { ++calls; }, "g"); // a minute of the custom clock
    std::this_thread::sleep_for(50ms);
    CHECK(calls.load() == 0);
    now += 60'000;
    REQUIRE(eventually([&] { return calls.load() == 1; }, 500ms));
}

TEST_CASE("callbacks may add timers and stop the service from inside") {
    TimerService timers;
    timers.start();
    std::atomic<int> inner{0};
    std::atomic<bool> stopped{false};
    timers.add(0, 0, [&] {
        timers.add(0, 0, [&] { ++inner; }, "g");
    }, "g");
    REQUIRE(eventually([&] { return inner.load() == 1; }));
    timers.add(0, 0, [&] {
        timers.stop(); // asks the thread to finish after this callback
        stopped = true;
    }, "g");
    REQUIRE(eventually([&] { return stopped.load(); }));
    std::atomic<int> late{0};
    timers.add(0, 0, [&] { ++late; }, "g");
    std::this_thread::sleep_for(40ms);
    CHECK(late.load() == 0);
    timers.start(); // reaps the old thread, starts a new one
    REQUIRE(eventually([&] { return late.load() == 1; }));
}
