#include "cli/commands.hpp"

#include "cli/args.hpp"
#include "cli/journal_commands.hpp"
#include "cli/ropa_command.hpp"
#include "cli/governance_commands.hpp"

#include "build_config.hpp"
#include "daemon.hpp"
#include "log.hpp"
#include "plugin/library.hpp"
#include "util/text.hpp"

#include <switchboard/detail/record_data.hpp>
#include <switchboard/plugin.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <sstream>

namespace switchboard::cli {

namespace {

const char* kMainHelp = R"(switchboard - routes council contact data to departments, proportionately,
and deletes it everywhere when its time is up.

Usage:
  switchboard run -c FILE [--plugin-dir DIR]... [--set KEY=VALUE]...
  switchboard check -c FILE [--plugin-dir DIR]... [--set KEY=VALUE]...
  switchboard plugins [--json] [-c FILE] [--plugin-dir DIR]...
  switchboard explain -c FILE RECORD.json [--source NAME]
  switchboard retention -c FILE (--dry-run [--within DURATION] | --pending)
  switchboard audit verify -c FILE
  switchboard deadletters -c FILE [list | retry (ID... | --all)] [--destination NAME]
  switchboard keygen NAME [--dir DIR]
  switchboard ropa -c FILE [--out DIR] [--format md|html|both] [--diff OLD.toml]
  switchboard sar -c FILE (--phone P | --email E | --nino N | --name N --postcode PC | ...) [--out DIR] [--hold --by NAME]
  switchboard hold -c FILE (add ... | list | end ID --by NAME)
  switchboard erase -c FILE (IDENTIFIERS | --record ID...) --by NAME [--wait DURATION] [--dry-run]
  switchboard erase -c FILE (status ID | list)
  switchboard version
  switchboard help [COMMAND]

Commands:
  run          start a node on a config file; stops cleanly on SIGTERM or SIGINT
  check        validate a config file (the same checks as run) and exit
  plugins      list the plugins found, with their config schema
  explain      show how a record would be classified, routed and minimised
  retention    list what will expire and when, or erase steps still outstanding
  audit        verify the hash-chained audit trail
  deadletters  list dead-lettered deliveries, or have them retried
  keygen       make a CURVE key pair for a department feed (server or client)
  ropa         write the record of processing (Art. 30); --diff: what a change alters
  sar          subject access: everything held about a person, as JSON and HTML
  hold         legal holds: keep named records (or a person's) past their expiry
  erase        erasure on request: a person's records, everywhere they went
  version      print the version and the plugin ABI

Every command takes --help. Exit codes: 0 success, 1 failure while running,
2 bad usage or an invalid config.
)";

const char* kRunHelp = R"(Usage: switchboard run -c FILE [--plugin-dir DIR]... [--set KEY=VALUE]...

Starts a node: validates FILE exactly as `switchboard check` does, loads the
plugins, starts every enabled source and destination and the HTTP listener,
and logs "ready" when it is serving. Stops cleanly on SIGTERM or SIGINT.
SIGHUP re-validates FILE and reports the result; live reload is not supported
yet, so a new config takes effect on restart.

Options:
  -c, --config FILE    the config file (required)
  --plugin-dir DIR     look for plugins in DIR instead of plugins.directories
                       (repeatable)
  --set KEY=VALUE      override one key of the file, e.g.
                       --set http.listen=127.0.0.1:0 (repeatable)
  -h, --help           this text
)";

const char* kCheckHelp = R"(Usage: switchboard check -c FILE [--plugin-dir DIR]... [--set KEY=VALUE]...

Validates FILE and the files it includes: unknown keys, types, ranges,
required keys, every plugin instance's section against its plugin's schema,
references between sections, and that every env: and file: secret can be
read. Prints every problem as FILE:LINE:COLUMN: KEY: MESSAGE and exits 2 if
there is any error, 0 otherwise (warnings do not fail the check).

Options:
  -c, --config FILE    the config file (required)
  --plugin-dir DIR     look for plugins in DIR instead of plugins.directories
                       (repeatable)
  --set KEY=VALUE      override one key of the file, e.g.
                       --set http.listen=127.0.0.1:0 (repeatable)
  -h, --help           this text
)";

const char* kPluginsHelp = R"(Usage: switchboard plugins [--json] [-c FILE] [--plugin-dir DIR]...

Lists the plugins found in the plugin directories (those of FILE, or DIR, or
the installed plugin directory): name, version, kind, ABI, file, what data
they emit or accept, and their config schema. Files that were refused are
listed with the reason.

Options:
  --json               machine-readable output
  -c, --config FILE    take plugins.directories and pins from FILE
  --plugin-dir DIR     look in DIR (repeatable)
  -h, --help           this text
)";

const char* kExplainHelp = R"(Usage: switchboard explain -c FILE RECORD.json [--source NAME]

Shows what the config does with one record, without changing anything: the
category it gets and the rule that gave it, the routes it takes, and for each
destination the exact payload it would receive with, for every field, the
decision and the rule that made it (kept by profile X, dropped: not in
profile, redacted: NINO, hashed, ...). Destinations that would receive nothing
are listed with the reason. This is how to show that a route is proportionate.

RECORD.json is a record in Switchboard's record format:
  {"meta": {"channel": "web_chat", ...}, "fields": {...},
   "categories": {"citizen.name": "identity.name", ...}}
(or a record as destinations receive it). --source names the source instance
it comes from (source filters of rules and routes apply); default: the only
source in FILE, if there is one.

Options:
  -c, --config FILE    the config file (required)
  --source NAME        the source instance the record comes from
  --plugin-dir DIR     look for plugins in DIR (repeatable)
  --set KEY=VALUE      override one key of the file (repeatable)
  -h, --help           this text
)";

const char* kRetentionHelp = R"(Usage: switchboard retention -c FILE --dry-run [--within DURATION]
       switchboard retention -c FILE --pending

--dry-run lists the records that will expire (all of them, or those expiring
within DURATION, e.g. "7d"), oldest first, with when: record id, source,
channel, category. Nothing is deleted: the running node sweeps by itself every
retention.sweep_interval.

--pending lists the erase steps still outstanding: vendor copies (source
erase hooks) and erase notices to departments that have not been confirmed
yet, with their attempts and last error.

Options:
  -c, --config FILE    the config file (required)
  -h, --help           this text
)";

const char* kAuditHelp = R"(Usage: switchboard audit verify -c FILE

Verifies the audit trail in the node's data directory: every entry's hash
link, the order and continuity of sequence numbers, and that the trail reaches
the head recorded in the journal (so a removed tail shows). Prints OK with the
number of entries, or every problem with its file, line and sequence number.
Exit code 0 when the trail is intact, 1 when it is not.

Options:
  -c, --config FILE    the config file (required)
  -h, --help           this text
)";

const char* kDeadLettersHelp = R"(Usage: switchboard deadletters -c FILE [list] [--destination NAME]
       switchboard deadletters -c FILE retry ID... | retry --all [--destination NAME]

Dead letters are deliveries that failed permanently or ran out of attempts.
`list` shows them (id, destination, sequence, record id, attempts, error,
when it expires). `retry` asks the node to deliver them again: the running
node (or the next one started on this data directory) attempts each within a
few seconds; one that succeeds leaves the list, one that fails stays with its
new error. Dead letters expire with the record's retention period.

Options:
  -c, --config FILE        the config file (required)
  --destination NAME       only this destination
  --all                    with retry: every dead letter (of --destination)
  -h, --help               this text
)";

const char* kKeygenHelp = R"(Usage: switchboard keygen NAME [--dir DIR]

Makes a CURVE key pair for a ZeroMQ department feed (docs/feed-protocol.md):
DIR/NAME.key holds the secret key (Z85, 40 characters; mode 0600) and
DIR/NAME.pub the public key. Give the server's .pub to the departments and
list each department's .pub in its zmq-feed destination's `clients`; point
`server_secret_key` at the server's key with "file:DIR/NAME.key". Existing
files are never overwritten. NAME is letters, digits, '.', '_' and '-'.

Options:
  --dir DIR            where to write the files (default: the current directory)
  -h, --help           this text
)";

const char* kVersionHelp = R"(Usage: switchboard version

Prints the Switchboard version and the plugin ABI it accepts, and on a second
line the malloc the command runs on (the meson option allocator: jemalloc,
tcmalloc or the system's).
)";

// Parses the options a command accepts (`allowed`: the long option names,
// space-separated); on a problem prints it and returns nullopt.
std::optional<Args> parse(int argc, char** argv, int first, std::string_view allowed,
                          const char* command) {
    Args a;
    auto takes = [&](std::string_view name) {
        std::string padded = " " + std::string(allowed) + " ";
        return padded.find(" " + std::string(name) + " ") != std::string::npos;
    };
    for (int i = first; i < argc; ++i) {
        std::string arg = argv[i];
        std::string name = arg, inline_value;
        bool has_inline = false;
        if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos) {
            name = arg.substr(0, arg.find('='));
            inline_value = arg.substr(arg.find('=') + 1);
            has_inline = true;
        }
        if (name == "-c") name = "--config";
        if (name == "-h") name = "--help";
        auto value = [&]() -> std::optional<std::string> {
            if (has_inline) return inline_value;
            if (i + 1 >= argc) {
                std::cerr << "switchboard " << command << ": " << name << " needs a value\n";
                return std::nullopt;
            }
            return std::string(argv[++i]);
        };
        if (!arg.empty() && arg[0] != '-') {
            if (!takes("ARG")) {
                std::cerr << "switchboard " << command << ": unexpected argument '" << arg
                          << "'; see switchboard " << command << " --help\n";
                return std::nullopt;
            }
            a.positional.push_back(arg);
            continue;
        }
        if (name == "--help") {
            a.help = true;
            continue;
        }
        if (!takes(name)) {
            std::cerr << "switchboard " << command << ": unknown option '" << arg
                      << "'; see switchboard " << command << " --help\n";
            return std::nullopt;
        }
        std::optional<std::string> v;
        if (name == "--config" || name == "--plugin-dir" || name == "--set" || name == "--source" ||
            name == "--within" || name == "--destination" || name == "--dir") {
            v = value();
            if (!v) return std::nullopt;
        }
        if (name == "--config") a.config = *v;
        else if (name == "--plugin-dir") a.plugin_dirs.emplace_back(*v);
        else if (name == "--set") a.overrides.push_back(*v);
        else if (name == "--source") a.source = *v;
        else if (name == "--within") a.within = *v;
        else if (name == "--destination") a.destination = *v;
        else if (name == "--dir") a.dir = *v;
        else if (name == "--json") a.json = true;
        else if (name == "--dry-run") a.dry_run = true;
        else if (name == "--pending") a.pending = true;
        else if (name == "--all") a.all = true;
    }
    return a;
}

void print_diagnostics(const config::Diagnostics& d, const plugin::Registry& registry) {
    for (const auto& r : registry.refused()) std::cerr << r.str() << "\n";
    for (const auto& item : d.all()) std::cerr << item.str() << "\n";
}

using plugin::kind_name;

const char* type_name(sb_config_type t) {
    switch (t) {
    case SB_CFG_STRING: return "string";
    case SB_CFG_INT: return "integer";
    case SB_CFG_FLOAT: return "float";
    case SB_CFG_BOOL: return "boolean";
    case SB_CFG_DURATION: return "duration";
    case SB_CFG_PATH: return "path";
    case SB_CFG_SIZE: return "size";
    }
    return "unknown";
}

std::vector<std::string> capability_names(std::uint64_t caps) {
    std::vector<std::string> out;
    const std::pair<std::uint64_t, const char*> names[] = {
        {SB_CAP_ERASE, "erase"},   {SB_CAP_HTTP, "http"},           {SB_CAP_POLL, "poll"},
        {SB_CAP_TIMERS, "timers"}, {SB_CAP_ASYNC_ACK, "async-ack"}, {SB_CAP_ATTACHMENTS, "attachments"},
        {SB_CAP_JSON_RECORDS, "json-records"}};
    for (auto [bit, name] : names)
        if (caps & bit) out.emplace_back(name);
    return out;
}

std::vector<std::string> categories(const sb_plugin_descriptor& d) {
    std::vector<std::string> out;
    if (d.data_categories)
        for (const char* const* p = d.data_categories; *p; ++p) out.emplace_back(*p);
    return out;
}

std::string number(double v) {
    std::ostringstream s;
    if (v == static_cast<double>(static_cast<long long>(v)) && v < 1e15 && v > -1e15)
        s << static_cast<long long>(v);
    else
        s << v;
    return s.str();
}

void json_string(std::string& out, std::string_view s) { sb::detail::append_json_string(out, s); }

void json_list(std::string& out, const std::vector<std::string>& items) {
    out += "[";
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += ",";
        json_string(out, items[i]);
    }
    out += "]";
}

std::string plugins_json(const plugin::Registry& registry) {
    std::string out = "{\"abi\":{\"major\":" + std::to_string(SB_ABI_MAJOR) +
                      ",\"minor\":" + std::to_string(SB_ABI_MINOR) + "},\"plugins\":[";
    bool first = true;
    for (const auto& p : registry.plugins()) {
        const sb_plugin_descriptor& d = *p->descriptor;
        if (!first) out += ",";
        first = false;
        out += "{\"name\":";
        json_string(out, d.name);
        out += ",\"version\":";
        json_string(out, d.version);
        out += ",\"kind\":";
        json_string(out, kind_name(d.kind));
        out += ",\"abi\":";
        json_string(out, std::to_string(d.abi_major) + "." + std::to_string(d.abi_minor));
        out += ",\"file\":";
        json_string(out, p->file.string());
        out += ",\"vendor\":";
        json_string(out, d.vendor ? d.vendor : "");
        out += ",\"licence\":";
        json_string(out, d.licence ? d.licence : "");
        out += ",\"description\":";
        json_string(out, d.description ? d.description : "");
        out += ",\"capabilities\":";
        json_list(out, capability_names(d.capabilities));
        out += ",\"data_categories\":";
        json_list(out, categories(d));
        out += ",\"config\":[";
        for (std::size_t i = 0; i < d.n_config_fields; ++i) {
            const sb_config_field& f = d.config_fields[i];
            if (i) out += ",";
            out += "{\"key\":";
            json_string(out, f.key);
            out += ",\"type\":";
            json_string(out, type_name(f.type));
            out += std::string(",\"required\":") + (f.flags & SB_CFG_REQUIRED ? "true" : "false");
            out += std::string(",\"secret\":") + (f.flags & SB_CFG_SECRET ? "true" : "false");
            out += std::string(",\"multi\":") + (f.flags & SB_CFG_MULTI ? "true" : "false");
            out += ",\"default\":";
            if (f.default_value)
                json_string(out, f.default_value);
            else
                out += "null";
            out += ",\"min\":" + (f.flags & SB_CFG_HAS_MIN ? number(f.min) : "null");
            out += ",\"max\":" + (f.flags & SB_CFG_HAS_MAX ? number(f.max) : "null");
            out += ",\"choices\":";
            if (f.choices) {
                std::vector<std::string> c;
                for (const char* const* q = f.choices; *q; ++q) c.emplace_back(*q);
                json_list(out, c);
            } else {
                out += "null";
            }
            out += ",\"description\":";
            json_string(out, f.description ? f.description : "");
            out += "}";
        }
        out += "]}";
    }
    out += "],\"refused\":[";
    first = true;
    for (const auto& r : registry.refused()) {
        if (!first) out += ",";
        first = false;
        out += "{\"file\":";
        json_string(out, r.file.string());
        out += ",\"reason\":";
        json_string(out, r.reason);
        out += "}";
    }
    out += "]}";
    return out;
}

std::string plugins_text(const plugin::Registry& registry) {
    std::ostringstream out;
    if (registry.plugins().empty()) out << "no plugins found\n";
    for (const auto& p : registry.plugins()) {
        const sb_plugin_descriptor& d = *p->descriptor;
        out << d.name << " " << d.version << "  " << kind_name(d.kind) << "  ABI " << d.abi_major
            << "." << d.abi_minor << "  " << p->file.string() << "\n";
        if (d.description && *d.description) out << "  " << d.description << "\n";
        out << "  vendor: " << (d.vendor ? d.vendor : "") << "; licence: "
            << (d.licence ? d.licence : "") << "\n";
        auto caps = capability_names(d.capabilities);
        out << "  capabilities: " << (caps.empty() ? "none" : text::join(caps, ", ")) << "\n";
        auto cats = categories(d);
        out << "  " << (d.kind == SB_KIND_DESTINATION ? "accepts: " : "emits: ")
            << (cats.empty() ? "(not declared)" : text::join(cats, ", ")) << "\n";
        out << "  config:" << (d.n_config_fields ? "" : " none") << "\n";
        for (std::size_t i = 0; i < d.n_config_fields; ++i) {
            const sb_config_field& f = d.config_fields[i];
            std::vector<std::string> notes;
            if (f.flags & SB_CFG_REQUIRED) notes.emplace_back("required");
            if (f.flags & SB_CFG_SECRET) notes.emplace_back("secret (env: or file:)");
            if (f.default_value) notes.push_back(std::string("default ") + f.default_value);
            auto bound = [&](double v) {
                if (f.type == SB_CFG_DURATION) return text::format_duration(static_cast<std::int64_t>(v));
                if (f.type == SB_CFG_SIZE) return number(v) + " bytes";
                return number(v);
            };
            if (f.flags & SB_CFG_HAS_MIN) notes.push_back("min " + bound(f.min));
            if (f.flags & SB_CFG_HAS_MAX) notes.push_back("max " + bound(f.max));
            if (f.choices) {
                std::vector<std::string> c;
                for (const char* const* q = f.choices; *q; ++q) c.emplace_back(*q);
                notes.push_back("one of " + text::join(c, "|"));
            }
            std::string type = type_name(f.type);
            if (f.flags & SB_CFG_MULTI) type = "array of " + type;
            out << "    " << f.key << " (" << type << ")";
            if (!notes.empty()) out << " [" << text::join(notes, ", ") << "]";
            if (f.description && *f.description) out << ": " << f.description;
            out << "\n";
        }
    }
    if (!registry.refused().empty()) {
        out << "refused:\n";
        for (const auto& r : registry.refused()) out << "  " << r.file.string() << ": " << r.reason << "\n";
    }
    return out.str();
}

int cmd_check(const Args& a) {
    if (!a.config) {
        std::cerr << "switchboard check: -c FILE is required; see switchboard check --help\n";
        return 2;
    }
    auto p = prepare({*a.config, a.plugin_dirs, a.overrides});
    print_diagnostics(p->diagnostics, p->registry);
    if (p->diagnostics.has_errors()) {
        std::cerr << a.config->string() << ": " << p->diagnostics.error_count() << " error(s)\n";
        return 2;
    }
    const auto& c = *p->config;
    std::size_t routes = 0;
    if (auto* r = c.root.get("route"); r && r->is_array()) routes = r->as_array()->size();
    std::cout << a.config->string() << ": OK (" << c.sources.size() << " source(s), "
              << c.destinations.size() << " destination(s), " << routes << " route(s))\n";
    return 0;
}

int cmd_run(const Args& a) {
    if (!a.config) {
        std::cerr << "switchboard run: -c FILE is required; see switchboard run --help\n";
        return 2;
    }
    RunOptions options{*a.config, a.plugin_dirs, a.overrides};
    auto p = prepare(options);
    if (p->diagnostics.has_errors()) {
        print_diagnostics(p->diagnostics, p->registry);
        std::cerr << a.config->string() << ": " << p->diagnostics.error_count()
                  << " error(s); not starting\n";
        return 2;
    }
    for (const auto& item : p->diagnostics.all()) log::warn("config", item.str());
    return run_daemon(std::move(p), options);
}

int cmd_plugins(const Args& a) {
    std::vector<std::filesystem::path> dirs = a.plugin_dirs;
    plugin::LoadOptions load;
    if (a.config) {
        config::Diagnostics d;
        auto c = config::load_config(*a.config, d, a.overrides);
        if (d.has_errors()) {
            for (const auto& item : d.all()) std::cerr << item.str() << "\n";
            return 2;
        }
        if (dirs.empty()) dirs = c->plugins.directories;
        load.pins = c->plugins.sha256;
        load.require_pins = c->plugins.require_pins;
    }
    if (dirs.empty()) dirs.emplace_back(SWITCHBOARD_PLUGINDIR);
    plugin::Registry registry;
    registry.scan(dirs, load);
    std::cout << (a.json ? plugins_json(registry) + "\n" : plugins_text(registry));
    return 0;
}

// Z85 (ZeroMQ RFC 32) of 32 bytes: 40 characters.
std::string z85(const unsigned char* data, std::size_t n) {
    static const char* alphabet =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    std::string out;
    for (std::size_t i = 0; i + 4 <= n; i += 4) {
        std::uint32_t v = static_cast<std::uint32_t>(data[i]) << 24 | static_cast<std::uint32_t>(data[i + 1]) << 16 |
                          static_cast<std::uint32_t>(data[i + 2]) << 8 | data[i + 3];
        char block[5];
        for (int k = 4; k >= 0; --k) {
            block[k] = alphabet[v % 85];
            v /= 85;
        }
        out.append(block, 5);
    }
    return out;
}

// A CURVE (Curve25519, as libsodium's crypto_box) key pair from OpenSSL's
// X25519: the same keys zmq_curve_keypair makes, without linking libzmq.
bool curve_keypair(std::string& pub, std::string& secret) {
    EVP_PKEY* key = nullptr;
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, nullptr);
    bool ok = ctx && EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &key) == 1;
    unsigned char raw_pub[32], raw_secret[32];
    std::size_t pub_len = sizeof raw_pub, secret_len = sizeof raw_secret;
    ok = ok && EVP_PKEY_get_raw_public_key(key, raw_pub, &pub_len) == 1 && pub_len == 32 &&
         EVP_PKEY_get_raw_private_key(key, raw_secret, &secret_len) == 1 && secret_len == 32;
    if (ok) {
        pub = z85(raw_pub, 32);
        secret = z85(raw_secret, 32);
    }
    OPENSSL_cleanse(raw_secret, sizeof raw_secret);
    EVP_PKEY_free(key);
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

// Writes `text` to a new file (never over an existing one) with `mode`.
bool write_new(const std::filesystem::path& p, const std::string& text, mode_t mode, std::string& why) {
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        why = p.string() + ": " + std::strerror(errno);
        return false;
    }
    bool ok = ::fchmod(fd, mode) == 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
              ::fsync(fd) == 0;
    if (!ok) why = p.string() + ": " + std::strerror(errno);
    ::close(fd);
    return ok;
}

int cmd_keygen(const Args& a) {
    if (a.positional.size() != 1) {
        std::cerr << "switchboard keygen: give one NAME; see switchboard keygen --help\n";
        return 2;
    }
    const std::string& name = a.positional[0];
    bool valid = !name.empty() && name[0] != '.' && name.size() <= 100;
    for (char c : name)
        valid = valid && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                          c == '_' || c == '-');
    if (!valid) {
        std::cerr << "switchboard keygen: NAME '" << name
                  << "' must be letters, digits, '.', '_' and '-', not starting with '.'\n";
        return 2;
    }
    std::filesystem::path dir = a.dir ? std::filesystem::path(*a.dir) : std::filesystem::path(".");
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) {
        std::cerr << "switchboard keygen: --dir " << dir.string() << " is not a directory\n";
        return 1;
    }
    const auto key_file = dir / (name + ".key"), pub_file = dir / (name + ".pub");
    for (const auto& f : {key_file, pub_file})
        if (std::filesystem::exists(std::filesystem::symlink_status(f, ec))) {
            std::cerr << "switchboard keygen: " << f.string() << " exists; not overwriting it\n";
            return 1;
        }
    std::string pub, secret, why;
    if (!curve_keypair(pub, secret)) {
        std::cerr << "switchboard keygen: could not make a key pair (OpenSSL X25519)\n";
        return 1;
    }
    bool ok = write_new(key_file, secret + "\n", 0600, why);
    if (ok && !write_new(pub_file, pub + "\n", 0644, why)) {
        std::filesystem::remove(key_file, ec);
        ok = false;
    }
    std::fill(secret.begin(), secret.end(), '\0');
    if (!ok) {
        std::cerr << "switchboard keygen: " << why << "\n";
        return 1;
    }
    std::cout << "wrote " << key_file.string() << " (secret, mode 0600) and " << pub_file.string()
              << "\npublic key: " << pub << "\n";
    return 0;
}

} // namespace

std::string version_text() {
    return std::string("switchboard ") + SWITCHBOARD_VERSION + " (plugin ABI " +
           std::to_string(SB_ABI_MAJOR) + "." + std::to_string(SB_ABI_MINOR) + ")";
}

std::string malloc_text() {
    // Asked of the running process, not of the build: what it was linked
    // with, or what LD_PRELOAD put in front of it.
    using mallctl_fn = int (*)(const char*, void*, std::size_t*, void*, std::size_t);
    if (auto mallctl = reinterpret_cast<mallctl_fn>(dlsym(RTLD_DEFAULT, "mallctl"))) {
        const char* version = nullptr;
        std::size_t len = sizeof version;
        if (mallctl("version", &version, &len, nullptr, 0) == 0 && version)
            return std::string("jemalloc ") + version;
        return "jemalloc";
    }
    using tc_version_fn = const char* (*)(int*, int*, const char**);
    if (auto tc_version = reinterpret_cast<tc_version_fn>(dlsym(RTLD_DEFAULT, "tc_version"))) {
        int major = 0, minor = 0;
        const char* patch = nullptr;
        tc_version(&major, &minor, &patch);
        return "tcmalloc (gperftools " + std::to_string(major) + "." + std::to_string(minor) + ")";
    }
    return std::string("glibc ") + gnu_get_libc_version();
}

int main(int argc, char** argv) {
    if (argc < 2) {
        std::cerr << kMainHelp;
        return 2;
    }
    std::string command = argv[1];
    if (command == "-h" || command == "--help" || command == "help") {
        std::string topic = argc > 2 ? argv[2] : "";
        if (topic == "run") std::cout << kRunHelp;
        else if (topic == "check") std::cout << kCheckHelp;
        else if (topic == "plugins") std::cout << kPluginsHelp;
        else if (topic == "version") std::cout << kVersionHelp;
        else if (topic == "explain") std::cout << kExplainHelp;
        else if (topic == "retention") std::cout << kRetentionHelp;
        else if (topic == "audit") std::cout << kAuditHelp;
        else if (topic == "deadletters") std::cout << kDeadLettersHelp;
        else if (topic == "keygen") std::cout << kKeygenHelp;
        else if (topic == "ropa") std::cout << kRopaHelp;
        else if (topic == "sar") std::cout << sar_help();
        else if (topic == "hold") std::cout << hold_help();
        else if (topic == "erase") std::cout << erase_help();
        else std::cout << kMainHelp;
        return 0;
    }
    if (command == "--version" || command == "version") {
        if (argc > 2 && (std::strcmp(argv[2], "--help") == 0 || std::strcmp(argv[2], "-h") == 0)) {
            std::cout << kVersionHelp;
            return 0;
        }
        std::cout << version_text() << "\nmalloc: " << malloc_text() << "\n";
        return 0;
    }
    // Many identifier options: these parse their own command lines.
    if (command == "sar") return cmd_sar(argc, argv);
    if (command == "hold") return cmd_hold(argc, argv);
    if (command == "erase") return cmd_erase(argc, argv);
    struct Command {
        const char* name;
        const char* help;
        const char* options;
        int (*fn)(const Args&);
    };
    static const Command commands[] = {
        {"run", kRunHelp, "--config --plugin-dir --set", cmd_run},
        {"check", kCheckHelp, "--config --plugin-dir --set", cmd_check},
        {"plugins", kPluginsHelp, "--json --config --plugin-dir --set", cmd_plugins},
        {"explain", kExplainHelp, "--config --plugin-dir --set --source ARG", cmd_explain},
        {"retention", kRetentionHelp, "--config --set --dry-run --pending --within", cmd_retention},
        {"audit", kAuditHelp, "--config --set ARG", cmd_audit},
        {"deadletters", kDeadLettersHelp, "--config --set --destination --all ARG", cmd_deadletters},
        {"keygen", kKeygenHelp, "--dir ARG", cmd_keygen},
    };
    // ropa has options of its own (--out, --format, --diff).
    if (command == "ropa") {
        try {
            return cmd_ropa(argc, argv);
        } catch (const std::exception& e) {
            std::cerr << "switchboard ropa: " << e.what() << "\n";
            return 1;
        }
    }
    for (const Command& c : commands) {
        if (command != c.name) continue;
        auto args = parse(argc, argv, 2, c.options, c.name);
        if (!args) return 2;
        if (args->help) {
            std::cout << c.help;
            return 0;
        }
        try {
            return c.fn(*args);
        } catch (const std::exception& e) {
            std::cerr << "switchboard " << c.name << ": " << e.what() << "\n";
            return 1;
        }
    }
    std::cerr << "switchboard: unknown command '" << command << "'; see switchboard --help\n";
    return 2;
}

} // namespace switchboard::cli
