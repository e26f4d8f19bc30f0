// Test support: a whole node in the test's process — config, plugins from the
// build tree, journal (real SQLite file), audit trail, retention service with
// a clock the test sets, delivery workers, an HTTP listener on a free port —
// wired as the daemon wires them, for tests that drive the pipeline directly.
#pragma once

#include "audit/audit_log.hpp"
#include "config/config.hpp"
#include "http/server.hpp"
#include "pipeline/delivery.hpp"
#include "pipeline/journal.hpp"
#include "pipeline/policy.hpp"
#include "pipeline/retention.hpp"
#include "plugin/instance.hpp"
#include "plugin/registry.hpp"
#include "process.hpp"
#include "store/store.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace sbtest {

struct Node {
    TempDir dir;
    std::filesystem::path config_file;
    std::unique_ptr<switchboard::config::Config> config;
    switchboard::config::Diagnostics diagnostics;
    switchboard::plugin::Registry registry;
    std::unique_ptr<switchboard::pipeline::Policy> policy;
    std::atomic<std::int64_t> now;
    switchboard::pipeline::Clock clock = [this] { return now.load(); };
    switchboard::plugin::Metrics metrics;
    std::unique_ptr<switchboard::store::Store> store;
    std::unique_ptr<switchboard::audit::AuditLog> audit;
    std::unique_ptr<switchboard::pipeline::Journal> journal;
    std::unique_ptr<switchboard::pipeline::RetentionService> retention;
    std::unique_ptr<switchboard::http::Server> http;
    switchboard::plugin::Services services;
    std::vector<std::unique_ptr<switchboard::plugin::Instance>> instances;
    std::vector<std::unique_ptr<switchboard::pipeline::DeliveryWorker>> workers;

    // `toml`: the config after [node] and [http]; the clock starts at
    // `start_ms`. The data directory is "data" beside the config, or
    // `data_dir` (for a node that restarts on another's data).
    Node(const std::string& toml, std::int64_t start_ms, const char* dir_prefix,
         const std::filesystem::path& data_dir = "data",
         switchboard::pipeline::Journal::Options journal_options = {})
        : dir(dir_prefix), now(start_ms) {
        namespace sw = switchboard;
        config_file = dir.write("node.toml", "[node]\ndata_dir = \"" + data_dir.string() +
                                                 "\"\n[http]\nenabled = false\n" + toml);
        config = sw::config::load_config(config_file, diagnostics);
        registry.scan({plugin_dir()}, {});
        sw::config::bind_plugins(
            *config,
            [&](const std::string& n) -> const sb_plugin_descriptor* {
                auto p = registry.find(n);
                return p ? p->descriptor : nullptr;
            },
            registry.names(), diagnostics);
        sw::config::resolve_secrets(*config, diagnostics);
        policy = sw::pipeline::Policy::compile(*config, diagnostics);
        for (const auto& d : diagnostics.all()) UNSCOPED_INFO(d.str());
        REQUIRE_FALSE(diagnostics.has_errors());
        std::filesystem::create_directories(config->node.data_dir);
        store = sw::store::open_sqlite((config->node.data_dir / "journal.db").string());
        audit = std::make_unique<sw::audit::AuditLog>(config->node.data_dir / "audit");
        journal = std::make_unique<sw::pipeline::Journal>(*store, *audit, *policy, sw::pipeline::RetentionRules(*config),
                                                          clock, &metrics, journal_options);
        journal->start();
        retention = std::make_unique<sw::pipeline::RetentionService>(*journal, clock, config->node.data_dir,
                                                                     60'000, &metrics);
        journal->on_erase_completion([this](const std::string& i, std::uint64_t id, sb_status s,
                                            const char* r) { retention->complete(i, id, s, r); });
        sw::http::Server::Options http_options;
        http_options.port = 0; // any free port
        http = std::make_unique<sw::http::Server>(http_options, nullptr);
        http->start();
        services.http = http.get();
        services.metrics = &metrics;
        services.sink = journal.get();
        services.clock = clock;
        services.data_dir = config->node.data_dir;
        for (auto* list : {&config->destinations, &config->sources}) {
            for (auto& ic : *list) {
                auto inst = std::make_unique<sw::plugin::Instance>(registry.find(ic.plugin), ic, services);
                std::string error;
                bool ok = inst->create(error) && inst->start(error);
                INFO(ic.name << ": " << error);
                REQUIRE(ok);
                retention->add_instance(inst.get());
                if (ic.kind == SB_KIND_DESTINATION) {
                    auto w = std::make_unique<sw::pipeline::DeliveryWorker>(*inst, *journal, clock, &metrics);
                    journal->attach(ic.name, w.get());
                    journal->attach_completion(ic.name, w.get());
                    w->start();
                    workers.push_back(std::move(w));
                }
                instances.push_back(std::move(inst));
            }
        }
    }
    ~Node() {
        for (auto& w : workers) w->stop();
        if (journal) journal->stop();
        for (auto& i : instances) i->stop();
        for (auto& i : instances) i->destroy();
        if (http) http->stop();
    }
    Node(const Node&) = delete;
    Node& operator=(const Node&) = delete;

    std::filesystem::path data() const { return config->node.data_dir; }

    // Emits as source `instance` would; returns the per-record statuses.
    std::vector<sb_status> emit(const std::string& instance, std::vector<std::unique_ptr<sb_record>> records) {
        std::vector<sb_status> results(records.size());
        std::string error;
        sb_status s = journal->emit(instance, records, nullptr, nullptr, results.data(), error);
        INFO(error);
        REQUIRE(s == SB_OK);
        return results;
    }

    // Waits (bounded) until `destination` has acknowledged `count`.
    void wait_delivered(const std::string& destination, std::uint64_t count) {
        REQUIRE(wait_until([&] { return store->acked(destination) >= count; }, std::chrono::seconds(30)));
    }
};

} // namespace sbtest
