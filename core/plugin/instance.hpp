#pragma once

// One running plugin instance and the host services it is handed: the
// implementation of sb_host_api.

#include "audit/audit_log.hpp"
#include "config/config.hpp"
#include "plugin/library.hpp"

#include <switchboard/detail/record_data.hpp>
#include <switchboard/plugin.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace switchboard {
class TimerService;
namespace http {
class Server;
}
} // namespace switchboard

namespace switchboard::plugin {

// Counters and gauges per instance, read by /metrics.
class Metrics {
public:
    struct Sample {
        std::string instance, name;
        bool counter;
        double value;
    };
    void add(const std::string& instance, const std::string& name, std::uint64_t delta);
    void set(const std::string& instance, const std::string& name, double value);
    std::vector<Sample> snapshot() const;
    double value(const std::string& instance, const std::string& name) const;

private:
    mutable std::mutex mutex_;
    std::map<std::pair<std::string, std::string>, std::pair<bool, double>> values_;
};

// Records an instance emitted, emptied and kept for the next ones it makes
// (a source's batch after batch): a recycled record keeps its strings'
// buffers, so the values of a record of the same shape mostly fit in them.
// Per instance, not per thread, so that a source that makes its records on
// one thread and emits them on another (jsonl-source reading ahead) gets
// them back. Any thread.
class RecordPool {
public:
    // At most a batch's worth are kept; the rest are freed.
    static constexpr std::size_t kKept = 4096;
    // One of the kept records, or a new one.
    std::unique_ptr<sb_record> take();
    // Empties `records` (null ones are skipped) and keeps them.
    void give_back(std::vector<std::unique_ptr<sb_record>>& records);

private:
    std::mutex mutex_;
    std::vector<std::unique_ptr<sb_record>> kept_;
};

// A batch handed to a RecordSink with begin() and not yet waited for.
class Emission {
public:
    virtual ~Emission() = default;
};

// Where emitted records, quarantined input and per-instance state go: the
// journal. Every call may come from any thread.
class RecordSink {
public:
    virtual ~RecordSink() = default;
    // `records` are stamped with source and received_at. See sb_host_api.emit_batch.
    // The records come back in `records` (emptied or not) for recycling.
    virtual sb_status emit(const std::string& instance,
                           std::vector<std::unique_ptr<sb_record>>& records,
                           const char* state_key, const char* state_value, sb_status* results,
                           std::string& error) = 0;
    // emit in two steps (sb_host_api.emit_begin, emit_wait): begin takes the
    // records and returns before they are committed; wait returns what emit
    // would have, fills `results` (one per record; may be null) and gives
    // the records back in `records`. `after`, when not null, is the same
    // instance's batch begun before this one and not yet waited for: this
    // one commits only if that one does. These defaults commit in begin.
    virtual std::shared_ptr<Emission> begin(const std::string& instance,
                                            std::vector<std::unique_ptr<sb_record>>& records,
                                            const char* state_key, const char* state_value,
                                            const std::shared_ptr<Emission>& after);
    virtual sb_status wait(Emission& emission, sb_status* results,
                           std::vector<std::unique_ptr<sb_record>>& records, std::string& error);
    virtual sb_status quarantine(const std::string& instance, std::string_view bytes,
                                 const std::string& reason, const std::string& ref) = 0;
    virtual std::optional<std::string> state_get(const std::string& instance,
                                                 const std::string& key) = 0;
    virtual sb_status state_set(const std::string& instance, const std::string& key,
                                const char* value) = 0;
    // Completion of an SB_PENDING delivery or erase request.
    virtual void complete(const std::string& instance, std::uint64_t id, sb_status status,
                          const char* receipt) = 0;
};

// A sink for a node without a journal (`switchboard plugins`, tests of the
// plugin host): it takes nothing and says so.
class NoJournal : public RecordSink {
public:
    sb_status emit(const std::string&, std::vector<std::unique_ptr<sb_record>>&, const char*,
                   const char*, sb_status*, std::string& error) override;
    sb_status quarantine(const std::string&, std::string_view, const std::string&,
                         const std::string&) override;
    std::optional<std::string> state_get(const std::string&, const std::string&) override;
    sb_status state_set(const std::string&, const std::string&, const char*) override;
    void complete(const std::string&, std::uint64_t, sb_status, const char*) override;
};

// An entry a plugin asked for with sb_host_api.audit, already checked and
// sanitised by the host table (see plugin.h).
struct AuditNote {
    std::string instance; // the instance's name in config
    std::string plugin;   // the plugin's name
    std::string event;    // [a-z_]{1,32}
    std::string record_id; // "" when none
    std::string detail;    // one line, at most 256 bytes; "" when none
};

// Appends `note` to the trail: kind "plugin", attributes instance, plugin,
// event and (when given) detail.
void append_audit(audit::AuditLog& log, std::int64_t ts_ms, const AuditNote& note);

struct Services {
    http::Server* http = nullptr;      // null when the listener is disabled
    TimerService* timers = nullptr;
    Metrics* metrics = nullptr;
    RecordSink* sink = nullptr;
    std::function<std::int64_t()> clock; // Unix ms
    // Where sb_host_api.audit entries go (the journal's writer thread); null:
    // the node has no audit trail and audit answers SB_ERR_UNAVAILABLE.
    // Called on the plugin's thread; must not block on the disk.
    std::function<sb_status(AuditNote note)> audit;
    std::filesystem::path data_dir;
};

class Instance {
public:
    Instance(std::shared_ptr<const LoadedPlugin> plugin, const config::InstanceConfig& config,
             Services& services);
    ~Instance();
    Instance(const Instance&) = delete;
    Instance& operator=(const Instance&) = delete;

    // Lifecycle, on the main thread. Each returns false with `error` set
    // (the plugin's own message, if it gave one).
    bool create(std::string& error);
    bool start(std::string& error);
    // Stops polling, removes HTTP routes and timers, then calls the plugin's
    // stop. Idempotent.
    void stop();
    void destroy();

    // Starts/stops the poll thread of a source with a poll hook.
    void start_polling();
    void stop_polling();

    // Hooks for the pipeline. `error` receives the plugin's explanation.
    sb_status deliver(const sb_delivery& delivery, std::string& error);
    sb_status flush(std::string& error);
    sb_status erase(const sb_erase_request& request, std::string& error);
    sb_status transform(sb_record* record, std::string& error);
    sb_status poll_once(std::string& error);

    const std::string& name() const { return config_.name; }
    const config::InstanceConfig& config() const { return config_; }
    const LoadedPlugin& plugin() const { return *plugin_; }
    const sb_plugin_descriptor& descriptor() const { return *plugin_->descriptor; }
    bool running() const { return state_ == State::Running; }
    // Routes may be registered only while the plugin's start runs.
    bool starting() const { return state_ == State::Starting; }
    // Records are taken from start until stop.
    bool may_emit() const { return state_ == State::Starting || state_ == State::Running; }

    // Host API plumbing (used by the C functions of the host table).
    struct Ctx;
    Services& services() { return services_; }
    const std::filesystem::path& own_dir() const { return own_dir_; }
    void log(sb_log_level level, std::string_view message) const;
    const sb_host_api* api() const;
    RecordPool& records() { return records_; }
    // Batches begun (emit_begin) and not yet waited for, by ticket. The
    // last one begun, if not yet waited for, is what the next one waits
    // on to commit (RecordSink::begin's `after`).
    std::shared_ptr<Emission> last_emission();
    std::uint64_t keep_emission(std::shared_ptr<Emission> emission);
    std::shared_ptr<Emission> take_emission(std::uint64_t ticket);

private:
    enum class State { New, Created, Starting, Running, Stopped, Destroyed };
    template <class F>
    sb_status call(F&& hook, std::string& error);
    void poll_loop();

    std::shared_ptr<const LoadedPlugin> plugin_; // keeps the library loaded
    config::InstanceConfig config_;
    Services& services_;
    std::unique_ptr<Ctx> ctx_;
    sb_instance* instance_ = nullptr;
    std::atomic<State> state_{State::New};
    std::filesystem::path own_dir_;

    std::thread poller_;
    std::mutex poll_mutex_;
    std::condition_variable poll_cv_;
    bool poll_stop_ = false;
    std::mutex hook_mutex_; // deliver/flush/erase: one at a time per instance
    RecordPool records_;
    std::mutex emissions_mutex_;
    std::map<std::uint64_t, std::shared_ptr<Emission>> emissions_;
    std::uint64_t last_ticket_ = 0;
};


} // namespace switchboard::plugin
