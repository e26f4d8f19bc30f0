#pragma once

// The validated configuration of a Switchboard node.
//
// Loading happens in three steps, each adding to one list of diagnostics so
// that `switchboard check` reports every problem in one run:
//   1. load_config: read the files (with includes), validate the core schema,
//      and extract the typed sections below;
//   2. bind_plugins: check each plugin instance's section against the schema
//      its plugin declares (so plugins must be loaded first);
//   3. resolve_secrets: read env:NAME and file:PATH references.
// `switchboard run` performs exactly the same steps before it starts anything.

#include "config/schema.hpp"
#include "log.hpp"

#include <switchboard/plugin.h>

#include <toml++/toml.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace switchboard::config {

// A plugin config value after validation: the typed value plus its text
// (numbers and booleans in TOML spelling) for config_string/config_list_string.
struct PluginValue {
    sb_config_type type = SB_CFG_STRING;
    bool multi = false;
    bool secret = false;
    bool from_default = false;
    std::string text;               // scalar: string value, or TOML spelling
    std::int64_t integer = 0;       // INT; DURATION in ms; SIZE in bytes
    double number = 0;              // FLOAT (and INT as double)
    bool boolean = false;
    std::vector<std::string> items; // MULTI: each element as text
    Location where;
};

struct InstanceConfig {
    std::string name;
    std::string plugin;
    sb_plugin_kind kind = SB_KIND_SOURCE;
    bool enabled = true;
    std::string description;
    std::optional<log::Level> log_level;
    Location where;        // the instance's table
    std::string key_path;  // "sources.web-chat"

    // Sources.
    std::int64_t poll_interval_ms = 1000;
    std::optional<std::int64_t> retention_ms;

    // Destinations: delivery policy.
    int max_attempts = 10;
    std::int64_t backoff_ms = 1000;
    std::int64_t backoff_max_ms = 600'000;
    int batch = 256;

    // The plugin's own section ([sources.NAME.config]) and, after
    // bind_plugins, its validated values with defaults applied.
    const toml::table* plugin_table = nullptr;
    std::map<std::string, PluginValue> values;
};

struct NodeConfig {
    std::string name = "switchboard";
    std::filesystem::path data_dir;
    std::string store = "sqlite";
    std::string postgresql_url; // secret reference until resolved
    // Journal::Options::prepare_helpers; unset: Journal::default_prepare_helpers().
    std::optional<unsigned> prepare_helpers;
};

struct LogConfig {
    log::Level level = log::Level::Info;
    log::Format format = log::Format::Text;
    std::map<std::string, log::Level> components;
};

struct HttpConfig {
    bool enabled = true;
    std::string host = "127.0.0.1";
    std::uint16_t port = 8080;
    std::int64_t max_body = 1 << 20;
    int threads = 8;
    std::int64_t timeout_ms = 30'000;
    bool allow_remote = false;
    // Both set: the listener speaks HTTPS (required beyond loopback).
    std::filesystem::path tls_cert, tls_key;
};

// The admin API (/admin/v1/) and /metrics: who may call them.
struct AdminConfig {
    struct Token {
        std::string name;       // who, in the audit trail
        std::string secret_key; // key of the resolved token in Config::secrets
        bool read_only = false; // GET only
        Location where;
    };
    std::vector<Token> tokens;
    bool metrics_auth = true;   // /metrics needs a token too
};

struct PluginsConfig {
    std::vector<std::filesystem::path> directories;
    bool require_pins = false;
    std::map<std::string, std::string> sha256; // file name -> lowercase hex
    Location pins_where;
};

struct RetentionConfig {
    std::int64_t default_ms = 28LL * 86'400'000;
    std::int64_t sweep_interval_ms = 60'000;
    // An erase task unconfirmed for longer is overdue (a missing receipt).
    std::int64_t receipt_deadline_ms = 7LL * 86'400'000;
};

struct Config {
    std::filesystem::path file;
    toml::table root; // every node keeps its file:line:column
    NodeConfig node;
    LogConfig log;
    HttpConfig http;
    AdminConfig admin;
    PluginsConfig plugins;
    RetentionConfig retention;
    std::vector<InstanceConfig> sources;
    std::vector<InstanceConfig> destinations;
    std::vector<InstanceConfig> transforms;
    // Secrets of core keys, by key path, after resolve_secrets.
    std::map<std::string, std::string> secrets;

    std::vector<InstanceConfig*> instances();
    const InstanceConfig* find_instance(std::string_view name) const;
};

// The core's schema: every section and key the core knows.
const Spec& core_schema();

// Step 1. Never throws for problems in the file: they go to `out`.
// `overrides` are "key.path=VALUE" settings from the command line (--set),
// applied over the files before validation; VALUE is a TOML value, or taken
// as a string if it does not parse as one.
std::unique_ptr<Config> load_config(const std::filesystem::path& file, Diagnostics& out,
                                    const std::vector<std::string>& overrides = {});

// Step 2. `find` returns the descriptor of a loaded plugin by name, or null.
// `available` lists the loaded plugin names, for messages.
using PluginLookup = std::function<const sb_plugin_descriptor*(const std::string& name)>;
void bind_plugins(Config& config, const PluginLookup& find,
                  const std::vector<std::string>& available, Diagnostics& out);

// Step 3. Reads env: and file: references of plugin secrets and core secret
// keys. Errors name the key and the variable or file, never a value.
void resolve_secrets(Config& config, Diagnostics& out);

// Resolves one reference; relative file: paths are taken from `base_dir`.
bool resolve_secret(const std::string& reference, const std::filesystem::path& base_dir,
                    std::string& value, std::string& error);

// A relative path in a config file is relative to that file's directory.
std::filesystem::path resolve_path(const toml::node& node, const std::string& value);

} // namespace switchboard::config
