#pragma once

#include "config/config.hpp"
#include "pipeline/policy.hpp"
#include "plugin/registry.hpp"

#include <filesystem>
#include <memory>
#include <vector>

namespace switchboard {

struct RunOptions {
    std::filesystem::path config_file;
    // When not empty, replaces plugins.directories from the config (tests and
    // `make run` point the daemon at the build tree this way).
    std::vector<std::filesystem::path> plugin_dirs;
    // "key.path=VALUE" settings applied over the file (--set).
    std::vector<std::string> overrides;
};

// Everything that `check` and `run` do before anything starts: read and
// validate the config, load the plugins, check each instance's section
// against its plugin's schema and resolve secrets. All problems end up in
// `diagnostics`; plugin files that were refused are in registry.refused().
struct Prepared {
    std::unique_ptr<config::Config> config;
    plugin::Registry registry;
    config::Diagnostics diagnostics;
    std::unique_ptr<pipeline::Policy> policy; // classification, routes, profiles
};

std::unique_ptr<Prepared> prepare(const RunOptions& options);

// Applies the config's log settings to the process logger.
void configure_logging(const config::Config& config);

// Runs a node until SIGTERM or SIGINT. Returns the process exit code.
// SIGHUP re-validates the config file and reports that live reload is not
// supported yet (a restart applies a new config).
int run_daemon(std::unique_ptr<Prepared> prepared, const RunOptions& options);

} // namespace switchboard
