#include "daemon.hpp"

#include "admin/admin_api.hpp"
#include "admin/governance_endpoints.hpp"
#include "admin/node_endpoints.hpp"
#include "audit/audit_log.hpp"
#include "dashboard/dashboard.hpp"
#include "http/server.hpp"
#include "pipeline/delivery.hpp"
#include "pipeline/journal.hpp"
#include "pipeline/retention.hpp"
#include "store/store.hpp"
#include "log.hpp"
#include "plugin/instance.hpp"
#include "timers.hpp"
#include "util/text.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace switchboard {

namespace {

constexpr const char* kComponent = "core";

log::Level to_log_level(int level) {
    if (level < 0) level = 0;
    if (level > 4) level = 4;
    return static_cast<log::Level>(level);
}

// Refuses to share a data directory with another running node.
class DataDirLock {
public:
    bool acquire(const std::filesystem::path& dir, std::string& error) {
        std::filesystem::path file = dir / "switchboard.lock";
        fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd_ < 0) {
            error = "cannot open " + file.string() + ": " + std::strerror(errno);
            return false;
        }
        if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
            error = "another switchboard process is using " + dir.string();
            return false;
        }
        std::string pid = std::to_string(::getpid()) + "\n";
        if (::ftruncate(fd_, 0) == 0 && ::write(fd_, pid.data(), pid.size()) < 0) {
            // The pid is informational only.
        }
        return true;
    }
    ~DataDirLock() {
        if (fd_ >= 0) ::close(fd_);
    }

private:
    int fd_ = -1;
};

// Bounds shutdown: if stopping hangs (a plugin that never returns from
// stop), the process still exits, with a line saying why.
class ShutdownWatchdog {
public:
    explicit ShutdownWatchdog(std::chrono::seconds limit)
        : thread_([this, limit] {
              std::unique_lock lock(mutex_);
              if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
                  log::error(kComponent, "shutdown took longer than " + std::to_string(limit.count()) +
                                             "s (stuck stopping " + stage_ + "); exiting now");
                  std::_Exit(3);
              }
          }) {}
    // What shutdown is stopping now, for the message if it gets stuck.
    void stage(std::string what) {
        std::lock_guard lock(mutex_);
        stage_ = std::move(what);
    }
    ~ShutdownWatchdog() {
        {
            std::lock_guard lock(mutex_);
            done_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool done_ = false;
    std::string stage_ = "the node";
    std::thread thread_;
};

} // namespace

std::unique_ptr<Prepared> prepare(const RunOptions& options) {
    auto p = std::make_unique<Prepared>();
    p->config = config::load_config(options.config_file, p->diagnostics, options.overrides);
    config::Config& c = *p->config;
    std::vector<std::filesystem::path> dirs =
        options.plugin_dirs.empty() ? c.plugins.directories : options.plugin_dirs;
    plugin::LoadOptions load;
    load.pins = c.plugins.sha256;
    load.require_pins = c.plugins.require_pins;
    p->registry.scan(dirs, load);
    for (const auto& file : p->registry.unused_pins())
        p->diagnostics.warn(c.plugins.pins_where, "plugins.sha256",
                            "pin for " + file + " matches no file in the plugin directories");
    config::bind_plugins(
        c,
        [&](const std::string& name) -> const sb_plugin_descriptor* {
            auto found = p->registry.find(name);
            return found ? found->descriptor : nullptr;
        },
        p->registry.names(), p->diagnostics);
    config::resolve_secrets(c, p->diagnostics);
    p->policy = pipeline::Policy::compile(c, p->diagnostics);
    p->diagnostics.sort();
    return p;
}

void configure_logging(const config::Config& c) {
    std::map<std::string, log::Level> overrides = c.log.components;
    for (const auto* list : {&c.sources, &c.destinations, &c.transforms})
        for (const auto& inst : *list)
            if (inst.log_level) overrides[inst.name] = *inst.log_level;
    log::Logger::get().configure(c.log.level, overrides, c.log.format);
}

int run_daemon(std::unique_ptr<Prepared> prepared, const RunOptions& options) {
    config::Config& c = *prepared->config;
    configure_logging(c);

    // Signals are taken by sigwait on this thread; every thread started
    // from here on inherits the mask.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    for (const auto& r : prepared->registry.refused()) log::error("host", r.str());
    for (const auto& p : prepared->registry.plugins())
        log::info("host", "loaded plugin " + p->name() + " " + p->descriptor->version + " (ABI " +
                              std::to_string(p->descriptor->abi_major) + "." +
                              std::to_string(p->descriptor->abi_minor) + ") from " +
                              p->file.string() + (p->sha256.empty() ? "" : ", sha256 pinned"));

    std::error_code ec;
    std::filesystem::create_directories(c.node.data_dir, ec);
    if (ec) {
        log::error(kComponent, "cannot create data directory " + c.node.data_dir.string() + ": " +
                                   ec.message());
        return 1;
    }
    std::filesystem::permissions(c.node.data_dir, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
    DataDirLock lock;
    std::string error;
    if (!lock.acquire(c.node.data_dir, error)) {
        log::error(kComponent, error);
        return 1;
    }

    auto to_log = [](const char* component) {
        return [component](int level, const std::string& message) {
            log::write(to_log_level(level), component, message);
        };
    };

    std::atomic<bool> ready{false};
    std::unique_ptr<http::Server> server;
    // The admin API and /metrics (admin/): audited through the journal once it runs.
    pipeline::Journal* admin_journal = nullptr;
    admin::AdminApi::AuditFn admin_audit = [&admin_journal](admin::CallNote note) {
        if (!admin_journal) return;
        std::int64_t now = admin_journal->now();
        admin_journal->submit({[note = std::move(note), now](store::Txn&, audit::AuditLog& log) {
                                   admin::append_call(log, now, note);
                               },
                               {}});
    };
    std::unique_ptr<admin::AdminApi> admin_api;
    admin::Node admin_node;
    if (c.http.enabled) {
        http::Server::Options o;
        o.host = c.http.host;
        o.port = c.http.port;
        o.max_body = static_cast<std::size_t>(c.http.max_body);
        o.threads = c.http.threads;
        o.timeout_ms = static_cast<int>(c.http.timeout_ms);
        o.tls_cert = c.http.tls_cert.string();
        o.tls_key = c.http.tls_key.string();
        server = std::make_unique<http::Server>(o, to_log("http"));
        std::vector<admin::Token> tokens;
        for (const auto& t : c.admin.tokens) tokens.push_back({t.name, c.secrets[t.secret_key], t.read_only});
        try {
            admin_api = std::make_unique<admin::AdminApi>(*server, std::move(tokens), admin_audit);
        } catch (const std::exception& e) {
            log::error(kComponent, std::string("admin: ") + e.what());
            return 1;
        }
        server->add_route("GET", "/healthz",
                          [](const http::Request&, http::Response& r) {
                              r.respond(200, "application/json", "{\"status\":\"ok\"}");
                          },
                          "core");
        server->add_route("GET", "/readyz",
                          [&ready](const http::Request&, http::Response& r) {
                              if (ready)
                                  r.respond(200, "application/json", "{\"status\":\"ready\"}");
                              else
                                  r.respond(503, "application/json", "{\"status\":\"starting\"}");
                          },
                          "core");
        try {
            server->start();
        } catch (const std::exception& e) {
            log::error("http", e.what());
            return 1;
        }
    }

    TimerService timers(to_log("timers"));
    timers.start();
    plugin::Metrics metrics;
    pipeline::Clock clock = [] {
        using namespace std::chrono;
        return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
    };

    // The journal: store, audit trail and the policy compiled from config.
    std::unique_ptr<store::Store> store;
    std::unique_ptr<audit::AuditLog> audit_log;
    try {
        store = store::open_sqlite((c.node.data_dir / "journal.db").string());
        audit_log = std::make_unique<audit::AuditLog>(
            c.node.data_dir / "audit", [](std::string_view m) { log::warn("audit", m); });
    } catch (const std::exception& e) {
        log::error(kComponent, e.what());
        return 1;
    }
    pipeline::Journal::Options journal_options;
    journal_options.prepare_helpers =
        c.node.prepare_helpers.value_or(pipeline::Journal::default_prepare_helpers());
    pipeline::Journal journal(*store, *audit_log, *prepared->policy, pipeline::RetentionRules(c), clock,
                              &metrics, journal_options);
    try {
        journal.start();
    } catch (const std::exception& e) {
        log::error(kComponent, std::string("cannot start the journal: ") + e.what());
        return 1;
    }
    // The dashboard reads what the journal keeps; loopback clients only until admin tokens
    // are configured, then any holder of one (http/access.hpp).
    std::unique_ptr<dashboard::Dashboard> dash;
    if (server) {
        http::AccessPolicy dashboard_access;
        for (const auto& t : c.admin.tokens) dashboard_access.tokens.push_back(c.secrets[t.secret_key]);
        dash = std::make_unique<dashboard::Dashboard>(c, *prepared->policy, *store, metrics, clock,
                                                      std::move(dashboard_access));
        dash->add_routes(*server);
    }
    pipeline::RetentionService retention(journal, clock, c.node.data_dir, c.retention.sweep_interval_ms,
                                         &metrics, c.retention.receipt_deadline_ms);
    journal.on_erase_completion([&retention](const std::string& instance, std::uint64_t id,
                                             sb_status status, const char* receipt) {
        retention.complete(instance, id, status, receipt);
    });

    plugin::Services services;
    services.http = server.get();
    services.timers = &timers;
    services.metrics = &metrics;
    services.sink = &journal;
    services.clock = clock;
    services.data_dir = c.node.data_dir;
    services.audit = [&journal](plugin::AuditNote note) {
        std::int64_t now = journal.now();
        journal.submit({[note = std::move(note), now](store::Txn&, audit::AuditLog& log) {
                            plugin::append_audit(log, now, note);
                        },
                        {}});
        return SB_OK;
    };

    std::vector<std::unique_ptr<plugin::Instance>> destinations, transforms, sources;
    std::vector<std::unique_ptr<pipeline::DeliveryWorker>> workers;
    auto shutdown = [&] {
        ready = false;
        ShutdownWatchdog watchdog(std::chrono::seconds(30));
        // No admin call may reach the journal once it stops.
        watchdog.stage("the admin API");
        if (admin_api) admin_api->stop();
        // Stop taking input, then let what was taken be committed and handed
        // over, then stop the destinations.
        for (auto it = sources.rbegin(); it != sources.rend(); ++it) {
            watchdog.stage("source " + (*it)->name());
            (*it)->stop();
        }
        watchdog.stage("retention");
        retention.stop();
        for (auto& w : workers) {
            watchdog.stage("the delivery worker of " + w->destination());
            w->stop();
        }
        watchdog.stage("the journal");
        journal.stop();
        for (auto* list : {&transforms, &destinations})
            for (auto it = list->rbegin(); it != list->rend(); ++it) {
                watchdog.stage("instance " + (*it)->name());
                (*it)->stop();
            }
        watchdog.stage("the HTTP listener");
        if (server) server->stop();
        watchdog.stage("the timers");
        timers.stop();
        watchdog.stage("the plugins (destroy)");
        workers.clear();
        for (auto* list : {&sources, &transforms, &destinations}) {
            for (auto it = list->rbegin(); it != list->rend(); ++it) (*it)->destroy();
            list->clear();
        }
    };

    // Destinations first, so that whatever sources emit has somewhere to go.
    auto start_all = [&](std::vector<config::InstanceConfig>& configs,
                         std::vector<std::unique_ptr<plugin::Instance>>& into) {
        for (config::InstanceConfig& ic : configs) {
            if (!ic.enabled) continue;
            auto plugin = prepared->registry.find(ic.plugin);
            auto inst = std::make_unique<plugin::Instance>(plugin, ic, services);
            if (!inst->create(error)) {
                log::error("host", ic.key_path + " (plugin " + ic.plugin + "): create failed: " + error);
                return false;
            }
            if (!inst->start(error)) {
                log::error("host", ic.key_path + " (plugin " + ic.plugin + "): start failed: " + error);
                inst->destroy();
                return false;
            }
            log::info("host", "started " + ic.key_path + " (plugin " + ic.plugin + ")");
            retention.add_instance(inst.get());
            into.push_back(std::move(inst));
        }
        return true;
    };
    if (!start_all(c.destinations, destinations)) {
        shutdown();
        return 1;
    }
    for (auto& d : destinations) {
        auto w = std::make_unique<pipeline::DeliveryWorker>(*d, journal, clock, &metrics);
        journal.attach(d->name(), w.get());
        journal.attach_completion(d->name(), w.get());
        w->start();
        workers.push_back(std::move(w));
    }
    if (!start_all(c.transforms, transforms) || !start_all(c.sources, sources)) {
        shutdown();
        return 1;
    }
    for (auto& t : transforms) journal.add_transform(t.get());
    retention.start();
    for (auto& inst : sources) inst->start_polling();

    if (admin_api) {
        admin_node.name = c.node.name;
        admin_node.ready = &ready;
        for (const auto* list : {&sources, &transforms, &destinations})
            for (const auto& inst : *list) admin_node.instances.push_back(inst.get());
        admin_node.journal = &journal;
        admin_node.audit = audit_log.get();
        admin_node.metrics = &metrics;
        admin_node.clock = clock;
        admin_node.started_at = clock();
        admin_node.receipt_deadline_ms = c.retention.receipt_deadline_ms;
        admin_journal = &journal;
        bool added = admin::add_node_endpoints(*admin_api, admin_node) &&
                     admin::add_governance_endpoints(*admin_api, admin_node) &&
                     admin::add_metrics_route(*server, admin_node,
                                              c.admin.metrics_auth ? admin_api.get() : nullptr, admin_audit);
        try {
            if (!added) throw std::runtime_error("an admin endpoint or /metrics is taken");
            admin_api->start();
        } catch (const std::exception& e) {
            log::error(kComponent, std::string("admin: ") + e.what());
            shutdown();
            return 1;
        }
        if (!admin_api->has_tokens())
            log::warn(kComponent, "admin API: no [[admin.token]] in the config; every /admin/v1 call "
                                  "is refused" + std::string(c.admin.metrics_auth ? ", and /metrics too" : ""));
    }

    ready = true;
    std::string http_text = server ? (server->tls() ? "https://" : "http://") + c.http.host + ":" + std::to_string(server->port())
                                   : "disabled";
    log::info(kComponent, "ready: node " + c.node.name + ", " + std::to_string(sources.size()) +
                              " source(s), " + std::to_string(destinations.size()) +
                              " destination(s), http " + http_text + ", data " +
                              c.node.data_dir.string() + ", prepare helpers " +
                              std::to_string(journal_options.prepare_helpers));

    for (;;) {
        int sig = 0;
        if (sigwait(&signals, &sig) != 0) continue;
        if (sig == SIGHUP) {
            auto again = prepare(options);
            if (again->diagnostics.has_errors()) {
                log::error(kComponent, "SIGHUP: " + c.file.string() + " has " +
                                           std::to_string(again->diagnostics.error_count()) +
                                           " error(s); run `switchboard check -c " + c.file.string() +
                                           "`; still running the config loaded at start");
            } else {
                log::warn(kComponent, "SIGHUP: " + c.file.string() +
                                          " is valid, but live reload is not supported yet; restart "
                                          "switchboard to apply it");
            }
            continue;
        }
        log::info(kComponent, std::string("stopping on ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT"));
        break;
    }
    shutdown();
    log::info(kComponent, "stopped");
    return 0;
}

} // namespace switchboard
