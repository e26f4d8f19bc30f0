#include "config/config.hpp"

#include "build_config.hpp"
#include "config/loader.hpp"
#include "util/text.hpp"

#include <switchboard/detail/record_data.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace switchboard::config {

namespace {

const std::vector<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "off"};

bool identifier_key(std::string_view s) { return text::is_identifier(s); }
const char* kIdentifierRule = "use lowercase letters, digits, '-' and '_', starting with a letter or digit";

// host:port, with the host an IPv4 address, "localhost" or [IPv6].
bool split_listen(const std::string& s, std::string& host, int& port) {
    auto colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
    host = s.substr(0, colon);
    std::string p = s.substr(colon + 1);
    if (p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) return false;
    port = std::stoi(p);
    if (port > 65535) return false;
    if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    return !host.empty();
}

bool is_loopback(const std::string& host) {
    return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

void check_listen(const toml::node& n, const std::string& path, Diagnostics& out) {
    if (!n.is_string()) return;
    std::string host;
    int port = 0;
    if (!split_listen(n.as_string()->get(), host, port))
        out.error(location_of(n), path,
                  "expected \"HOST:PORT\" such as \"127.0.0.1:8080\" (port 0 picks a free port)");
}

void check_sha256(const toml::node& n, const std::string& path, Diagnostics& out) {
    if (!n.is_string()) return;
    const std::string& v = n.as_string()->get();
    if (v.size() != 64 || !text::is_lower_hex(v))
        out.error(location_of(n), path, "expected 64 lowercase hexadecimal digits (sha256sum output)");
}

// Profile field transforms: keep, mask, mask:N, hash, redact,
// generalise:postcode|month|age_band.
void check_transform(const toml::node& n, const std::string& path, Diagnostics& out) {
    if (!n.is_string()) return;
    static const std::regex re(
        R"(^(keep|hash|redact|mask(:[0-9]{1,2})?|generalise:(postcode|month|age_band))$)");
    if (!std::regex_match(n.as_string()->get(), re))
        out.error(location_of(n), path,
                  "expected a transform: keep, mask, mask:N (keep last N), hash, redact, "
                  "generalise:postcode, generalise:month or generalise:age_band");
}

void check_field_path(const toml::table& fields, const std::string& path, Diagnostics& out) {
    // Field paths: dotted keys, [N] or [*] indexes, and a final ".*" subtree.
    static const std::regex re(
        R"(^(\*|[A-Za-z0-9_-]+(\[([0-9]+|\*)\])*(\.[A-Za-z0-9_-]+(\[([0-9]+|\*)\])*)*(\.\*)?)$)");
    for (auto&& [key, value] : fields) {
        (void)value;
        if (!std::regex_match(key.str().begin(), key.str().end(), re))
            out.error(location_of(key), join_path(path, key.str()),
                      "is not a field path (e.g. citizen.name, content.turns[*].text, citizen.*)");
    }
}

// Exactly one matcher per classification rule.
void check_rule(const toml::node& n, const std::string& path, Diagnostics& out) {
    const toml::table* t = n.as_table();
    if (!t) return;
    int matchers = 0;
    for (const char* k : {"equals", "one_of", "contains", "regex", "keywords"})
        if (t->contains(k)) ++matchers;
    if (matchers != 1)
        out.error(location_of(n), path,
                  "needs exactly one of equals, one_of, contains, regex or keywords");
    if (auto* r = t->get("regex"); r && r->is_string()) {
        try {
            std::regex test(r->as_string()->get());
        } catch (const std::regex_error&) {
            out.error(location_of(*r), join_path(path, "regex"), "is not a valid regular expression");
        }
    }
}

S instance_spec(sb_plugin_kind kind) {
    S s = S::table();
    s.field("plugin", S::string().required().describe("the plugin that implements this instance"))
        .field("enabled", S::boolean().fallback("true").describe("start this instance"))
        .field("description", S::string().describe("what this instance is for"))
        .field("log_level", S::string().choices(kLevels).describe("log level for this instance"))
        .field("config", S::table().opaque().describe("the plugin's own settings"));
    if (kind == SB_KIND_SOURCE) {
        s.field("poll_interval", S::duration().min(10).max(3'600'000).fallback("\"1s\"")
                                     .describe("pause between polls when the source is idle"))
            .field("retention", S::duration().min(1000).max(3650.0 * 86'400'000)
                                    .describe("how long records from this source are kept"));
    }
    if (kind == SB_KIND_DESTINATION) {
        s.field("max_attempts", S::integer().min(1).max(1000).fallback("10")
                                    .describe("delivery attempts before a record is dead-lettered"))
            .field("backoff", S::duration().min(10).max(3'600'000).fallback("\"1s\"")
                                  .describe("first retry delay (doubles each attempt, with jitter)"))
            .field("backoff_max", S::duration().min(10).max(86'400'000).fallback("\"10m\"")
                                      .describe("longest retry delay"))
            .field("batch", S::integer().min(1).max(10000).fallback("256")
                                .describe("records handed to the plugin before a flush"))
            .field("transfer_abroad", S::string().describe(
                                          "a transfer outside the UK this recipient makes: country and safeguard"));
    }
    return s;
}

Spec build_core_schema() {
    S root = S::table();
    root.field("include", S::array(S::path()).or_scalar().describe("other files to read"));
    root.field("node",
               S::table()
                   .required()
                   .field("name", S::string().fallback("\"switchboard\"").describe("this node's name"))
                   .field("data_dir", S::path().required().describe(
                                          "where the journal, outbox, audit and quarantine live"))
                   .field("store", S::string().choices({"sqlite", "postgresql"}).fallback("\"sqlite\"")
                                       .describe("journal backend"))
                   .field("prepare_helpers",
                          S::integer().min(0).max(16).describe(
                              "threads that help a source prepare a large batch (default: 1 on a "
                              "machine of more than 2 CPUs, else 0)"))
                   .field("postgresql", S::table().field(
                                            "url", S::string().secret().required().describe(
                                                       "connection URL (env: or file: reference)"))));
    root.field("log",
               S::table()
                   .field("level", S::string().choices(kLevels).fallback("\"info\""))
                   .field("format", S::string().choices({"text", "json"}).fallback("\"text\""))
                   .field("components", S::table().any("component or instance name",
                                                       S::string().choices(kLevels))));
    root.field("http",
               S::table()
                   .field("enabled", S::boolean().fallback("true"))
                   .field("listen", S::string().fallback("\"127.0.0.1:8080\"").check(check_listen))
                   .field("max_body", S::size().min(1024).max(256.0 * 1024 * 1024).fallback("\"1MiB\""))
                   .field("threads", S::integer().min(1).max(64).fallback("8"))
                   .field("timeout", S::duration().min(1000).max(600'000).fallback("\"30s\""))
                   .field("allow_remote", S::boolean().fallback("false").describe(
                                              "allow listening beyond loopback"))
                   .field("tls_cert", S::path().describe("PEM certificate chain: serve HTTPS"))
                   .field("tls_key", S::path().describe("PEM private key of tls_cert")));
    root.field("admin",
               S::table()
                   .field("metrics_auth", S::boolean().fallback("true").describe(
                                              "/metrics needs an admin token"))
                   .field("token", S::array(S::table()
                                                .field("name", S::string().required().describe(
                                                                   "who calls, in the audit trail"))
                                                .field("token", S::string().secret().required().describe(
                                                                    "bearer token (env: or file: reference)"))
                                                .field("read_only", S::boolean().fallback("false").describe(
                                                                        "GET calls only")))));
    root.field("plugins",
               S::table()
                   .field("directories", S::array(S::path()).or_scalar().describe(
                                             "where plugin libraries are looked for"))
                   .field("require_pins", S::boolean().fallback("false").describe(
                                              "refuse any plugin file without a sha256 pin"))
                   .field("sha256", S::table().any("plugin file name",
                                                   S::string().check(check_sha256))));
    root.field("sources", S::table().any("source instance name", instance_spec(SB_KIND_SOURCE),
                                         identifier_key, kIdentifierRule));
    root.field("destinations",
               S::table().any("destination instance name", instance_spec(SB_KIND_DESTINATION),
                              identifier_key, kIdentifierRule));
    root.field("transforms",
               S::table().any("transform instance name", instance_spec(SB_KIND_TRANSFORM),
                              identifier_key, kIdentifierRule));
    root.field(
        "classify",
        S::table()
            .field("rule", S::array(S::table()
                                        .field("category", S::string().required())
                                        .field("field", S::string().required())
                                        .field("equals", S::string())
                                        .field("one_of", S::array(S::string()))
                                        .field("contains", S::string())
                                        .field("regex", S::string())
                                        .field("keywords", S::array(S::string()))
                                        .field("case_sensitive", S::boolean().fallback("false"))
                                        .field("source", S::array(S::string()).or_scalar())
                                        .check(check_rule))));
    root.field("route",
               S::array(S::table()
                            .field("name", S::string())
                            .field("category", S::array(S::string()).or_scalar().required())
                            .field("channel", S::array(S::string()).or_scalar())
                            .field("source", S::array(S::string()).or_scalar())
                            .field("destination", S::string().required())
                            .field("purpose", S::string().required())
                            .field("profile", S::string().required())
                            .field("lawful_basis", S::string())));
    root.field("profiles",
               S::table().any("profile name",
                              S::table()
                                  .field("version", S::integer().min(1).fallback("1"))
                                  .field("description", S::string())
                                  .field("hash_key", S::string().secret())
                                  .field("fields", S::table()
                                                       .required()
                                                       .any("field path", S::string().check(check_transform))
                                                       .check([](const toml::node& n, const std::string& p,
                                                                 Diagnostics& out) {
                                                           if (n.is_table())
                                                               check_field_path(*n.as_table(), p, out);
                                                       })),
                              identifier_key, kIdentifierRule));
    root.field("retention",
               S::table()
                   .field("default", S::duration().min(1000).max(3650.0 * 86'400'000).fallback("\"28d\""))
                   .field("sweep_interval", S::duration().min(100).max(86'400'000).fallback("\"1m\""))
                   .field("receipt_deadline",
                          S::duration().min(1000).max(3650.0 * 86'400'000).fallback("\"7d\""))
                   .field("policy", S::array(S::table()
                                                 .field("source", S::string())
                                                 .field("category", S::string())
                                                 .field("retention", S::duration().required().min(1000)))));
    return *root.build();
}

std::optional<std::string> get_string(const toml::table& t, std::string_view key) {
    if (auto* n = t.get(key); n && n->is_string()) return n->as_string()->get();
    return std::nullopt;
}

std::optional<std::int64_t> get_duration(const toml::table& t, std::string_view key) {
    if (auto s = get_string(t, key)) return text::parse_duration(*s);
    return std::nullopt;
}

std::optional<std::int64_t> get_int(const toml::table& t, std::string_view key) {
    if (auto* n = t.get(key); n && n->is_integer()) return n->as_integer()->get();
    return std::nullopt;
}

std::optional<bool> get_bool(const toml::table& t, std::string_view key) {
    if (auto* n = t.get(key); n && n->is_boolean()) return n->as_boolean()->get();
    return std::nullopt;
}

std::optional<std::int64_t> size_of(const toml::node& n) {
    if (n.is_integer()) return n.as_integer()->get();
    if (n.is_string()) return text::parse_size(n.as_string()->get());
    return std::nullopt;
}

const toml::table empty_table;

const toml::table& table_at(const toml::table& t, std::string_view key) {
    if (auto* n = t.get(key); n && n->is_table()) return *n->as_table();
    return empty_table;
}

void extract_instances(Config& c, std::string_view section, sb_plugin_kind kind,
                       std::vector<InstanceConfig>& out) {
    for (auto&& [key, value] : table_at(c.root, section)) {
        const toml::table* t = value.as_table();
        // Badly named instances are already reported; checking them further
        // would only repeat that.
        if (!t || !text::is_identifier(key.str())) continue;
        InstanceConfig inst;
        inst.name = std::string(key.str());
        inst.kind = kind;
        inst.where = location_of(value);
        inst.key_path = join_path(std::string(section), key.str());
        inst.plugin = get_string(*t, "plugin").value_or("");
        inst.enabled = get_bool(*t, "enabled").value_or(true);
        inst.description = get_string(*t, "description").value_or("");
        if (auto l = get_string(*t, "log_level")) inst.log_level = log::parse_level(*l);
        if (auto v = get_duration(*t, "poll_interval")) inst.poll_interval_ms = *v;
        if (auto v = get_duration(*t, "retention")) inst.retention_ms = *v;
        if (auto v = get_int(*t, "max_attempts")) inst.max_attempts = static_cast<int>(*v);
        if (auto v = get_duration(*t, "backoff")) inst.backoff_ms = *v;
        if (auto v = get_duration(*t, "backoff_max")) inst.backoff_max_ms = *v;
        if (auto v = get_int(*t, "batch")) inst.batch = static_cast<int>(*v);
        if (auto* cfg = t->get("config"); cfg && cfg->is_table()) inst.plugin_table = cfg->as_table();
        out.push_back(std::move(inst));
    }
}

void extract(Config& c, Diagnostics& out) {
    const toml::table& node = table_at(c.root, "node");
    c.node.name = get_string(node, "name").value_or("switchboard");
    if (auto* d = node.get("data_dir"); d && d->is_string())
        c.node.data_dir = resolve_path(*d, d->as_string()->get());
    c.node.store = get_string(node, "store").value_or("sqlite");
    if (auto v = get_int(node, "prepare_helpers")) c.node.prepare_helpers = static_cast<unsigned>(*v);
    c.node.postgresql_url = get_string(table_at(node, "postgresql"), "url").value_or("");
    if (c.node.store == "postgresql" && !node.contains("postgresql"))
        out.error(location_of(node), "node.postgresql.url",
                  "store = \"postgresql\" needs [node.postgresql] url = \"env:NAME\"");
    if (c.node.store == "postgresql")
        out.error(location_of(*node.get("store")), "node.store",
                  "the PostgreSQL journal is not built yet; use \"sqlite\"");

    const toml::table& lg = table_at(c.root, "log");
    c.log.level = log::parse_level(get_string(lg, "level").value_or("info")).value_or(log::Level::Info);
    c.log.format = get_string(lg, "format").value_or("text") == "json" ? log::Format::Json
                                                                        : log::Format::Text;
    for (auto&& [k, v] : table_at(lg, "components"))
        if (v.is_string())
            if (auto l = log::parse_level(v.as_string()->get())) c.log.components[std::string(k.str())] = *l;

    const toml::table& http = table_at(c.root, "http");
    c.http.enabled = get_bool(http, "enabled").value_or(true);
    c.http.allow_remote = get_bool(http, "allow_remote").value_or(false);
    if (auto* l = http.get("listen"); l && l->is_string()) {
        std::string host;
        int port = 0;
        if (split_listen(l->as_string()->get(), host, port)) {
            c.http.host = host;
            c.http.port = static_cast<std::uint16_t>(port);
            if (!c.http.allow_remote && !is_loopback(host))
                out.error(location_of(*l), "http.listen",
                          "listens beyond this machine; set http.allow_remote = true to allow it "
                          "(and put TLS in front of it)");
            else if (!is_loopback(host) && (!http.contains("tls_cert") || !http.contains("tls_key")))
                out.error(location_of(*l), "http.listen",
                          "listens beyond this machine without TLS; set http.tls_cert and "
                          "http.tls_key (PEM files) so the admin API and webhooks are served over HTTPS");
        }
    }
    for (const char* key : {"tls_cert", "tls_key"})
        if (auto* n = http.get(key); n && n->is_string())
            (std::string_view(key) == "tls_cert" ? c.http.tls_cert : c.http.tls_key) =
                resolve_path(*n, n->as_string()->get());
    if (c.http.tls_cert.empty() != c.http.tls_key.empty())
        out.error(location_of(http), c.http.tls_cert.empty() ? "http.tls_cert" : "http.tls_key",
                  "http.tls_cert and http.tls_key go together: set both, or neither");

    const toml::table& admin = table_at(c.root, "admin");
    c.admin.metrics_auth = get_bool(admin, "metrics_auth").value_or(true);
    if (auto* tokens = admin.get("token"); tokens && tokens->is_array()) {
        std::size_t i = 0;
        for (auto& n : *tokens->as_array()) {
            const std::string key = "admin.token[" + std::to_string(i++) + "]";
            const toml::table* t = n.as_table();
            if (!t) continue;
            config::AdminConfig::Token token;
            token.name = get_string(*t, "name").value_or("");
            token.secret_key = key + ".token";
            token.read_only = get_bool(*t, "read_only").value_or(false);
            token.where = location_of(n);
            if (token.name.empty()) continue; // reported by validation
            if (!text::is_identifier(token.name)) {
                out.error(location_of(*t->get("name")), key + ".name",
                          "a token name is what the audit trail shows: letters, digits, '-' and '_'");
                continue;
            }
            for (const auto& other : c.admin.tokens)
                if (other.name == token.name)
                    out.error(token.where, key + ".name",
                              "two admin tokens are named '" + token.name + "': the audit trail could not tell them apart");
            c.admin.tokens.push_back(std::move(token));
        }
    }
    if (auto* m = http.get("max_body"))
        if (auto v = size_of(*m)) c.http.max_body = *v;
    if (auto v = get_int(http, "threads")) c.http.threads = static_cast<int>(*v);
    if (auto v = get_duration(http, "timeout")) c.http.timeout_ms = *v;

    const toml::table& plugins = table_at(c.root, "plugins");
    c.plugins.require_pins = get_bool(plugins, "require_pins").value_or(false);
    if (auto* dirs = plugins.get("directories")) {
        auto add = [&](const toml::node& n) {
            if (n.is_string()) c.plugins.directories.push_back(resolve_path(n, n.as_string()->get()));
        };
        if (dirs->is_array())
            for (auto& n : *dirs->as_array()) add(n);
        else
            add(*dirs);
    } else {
        c.plugins.directories.push_back(SWITCHBOARD_PLUGINDIR);
    }
    if (auto* pins = plugins.get("sha256"); pins && pins->is_table()) {
        c.plugins.pins_where = location_of(*pins);
        for (auto&& [k, v] : *pins->as_table())
            if (v.is_string()) c.plugins.sha256[std::string(k.str())] = v.as_string()->get();
    }

    const toml::table& ret = table_at(c.root, "retention");
    if (auto v = get_duration(ret, "default")) c.retention.default_ms = *v;
    if (auto v = get_duration(ret, "sweep_interval")) c.retention.sweep_interval_ms = *v;
    if (auto v = get_duration(ret, "receipt_deadline")) c.retention.receipt_deadline_ms = *v;

    extract_instances(c, "sources", SB_KIND_SOURCE, c.sources);
    extract_instances(c, "destinations", SB_KIND_DESTINATION, c.destinations);
    extract_instances(c, "transforms", SB_KIND_TRANSFORM, c.transforms);

    // Instance names are shared by all kinds: logs and metrics use them alone.
    std::map<std::string, std::string> seen;
    for (InstanceConfig* inst : c.instances()) {
        auto [it, fresh] = seen.emplace(inst->name, inst->key_path);
        if (!fresh)
            out.error(inst->where, inst->key_path,
                      "instance name already used by " + it->second + "; names must be unique");
    }

    // Cross references: routes name destinations and profiles that exist.
    if (auto* routes = c.root.get("route"); routes && routes->is_array()) {
        std::size_t i = 0;
        for (auto& r : *routes->as_array()) {
            std::string path = "route[" + std::to_string(i++) + "]";
            const toml::table* t = r.as_table();
            if (!t) continue;
            if (auto* d = t->get("destination"); d && d->is_string()) {
                const std::string& name = d->as_string()->get();
                auto found = std::find_if(c.destinations.begin(), c.destinations.end(),
                                          [&](const InstanceConfig& x) { return x.name == name; });
                if (found == c.destinations.end())
                    out.error(location_of(*d), path + ".destination",
                              "no destination named '" + name + "' in [destinations]");
            }
            if (auto* p = t->get("profile"); p && p->is_string()) {
                const std::string& name = p->as_string()->get();
                if (!table_at(c.root, "profiles").contains(name))
                    out.error(location_of(*p), path + ".profile",
                              "no profile named '" + name + "' in [profiles]");
            }
        }
    }
}

// Reads a validated plugin value (defaults come through the same path).
PluginValue read_plugin_value(const toml::node& n, const sb_config_field& f) {
    PluginValue v;
    v.type = f.type;
    v.multi = f.flags & SB_CFG_MULTI;
    v.secret = f.flags & SB_CFG_SECRET;
    v.where = location_of(n);
    auto text_of = [&](const toml::node& x) -> std::string {
        if (x.is_string()) {
            if (f.type == SB_CFG_PATH) return resolve_path(x, x.as_string()->get()).string();
            return x.as_string()->get();
        }
        if (x.is_integer()) return std::to_string(x.as_integer()->get());
        if (x.is_floating_point()) {
            std::ostringstream s;
            s << x.as_floating_point()->get();
            return s.str();
        }
        if (x.is_boolean()) return x.as_boolean()->get() ? "true" : "false";
        return {};
    };
    auto scalar = [&](const toml::node& x, PluginValue& into) {
        into.text = text_of(x);
        switch (f.type) {
        case SB_CFG_INT:
            into.integer = x.as_integer() ? x.as_integer()->get() : 0;
            into.number = static_cast<double>(into.integer);
            break;
        case SB_CFG_FLOAT:
            into.number = x.is_integer() ? static_cast<double>(x.as_integer()->get())
                                         : x.as_floating_point() ? x.as_floating_point()->get() : 0;
            break;
        case SB_CFG_BOOL: into.boolean = x.as_boolean() && x.as_boolean()->get(); break;
        case SB_CFG_DURATION:
            into.integer = text::parse_duration(into.text).value_or(0);
            into.number = static_cast<double>(into.integer);
            break;
        case SB_CFG_SIZE:
            into.integer = size_of(x).value_or(0);
            into.number = static_cast<double>(into.integer);
            break;
        default: break;
        }
    };
    if (v.multi) {
        if (n.is_array())
            for (auto& e : *n.as_array()) v.items.push_back(text_of(e));
        else
            v.items.push_back(text_of(n));
    } else {
        scalar(n, v);
    }
    return v;
}

void collect_core_secrets(const toml::node& n, const Spec& spec, const std::string& path,
                          std::vector<std::pair<std::string, const toml::node*>>& out) {
    if (spec.secret && n.is_string()) {
        out.emplace_back(path, &n);
        return;
    }
    if (spec.kind == Kind::Table && n.is_table() && !spec.opaque) {
        for (auto&& [k, v] : *n.as_table()) {
            std::string child = join_path(path, k.str());
            auto it = std::find_if(spec.fields.begin(), spec.fields.end(),
                                   [&](const auto& f) { return f.first == k.str(); });
            if (it != spec.fields.end())
                collect_core_secrets(v, *it->second, child, out);
            else if (spec.any_value)
                collect_core_secrets(v, *spec.any_value, child, out);
        }
    }
    if (spec.kind == Kind::Array && n.is_array()) {
        std::size_t i = 0;
        for (auto& e : *n.as_array())
            collect_core_secrets(e, *spec.element, path + "[" + std::to_string(i++) + "]", out);
    }
}

} // namespace

std::vector<InstanceConfig*> Config::instances() {
    std::vector<InstanceConfig*> all;
    for (auto* list : {&sources, &destinations, &transforms})
        for (auto& i : *list) all.push_back(&i);
    return all;
}

const InstanceConfig* Config::find_instance(std::string_view name) const {
    for (const auto* list : {&sources, &destinations, &transforms})
        for (const auto& i : *list)
            if (i.name == name) return &i;
    return nullptr;
}

const Spec& core_schema() {
    static const Spec schema = build_core_schema();
    return schema;
}

std::filesystem::path resolve_path(const toml::node& node, const std::string& value) {
    std::filesystem::path p = value;
    // "-" conventionally means standard input or output, not a file.
    if (p.is_absolute() || value.empty() || value == "-") return p;
    auto src = node.source().path;
    std::filesystem::path base = src ? std::filesystem::path(*src).parent_path() : std::filesystem::path();
    return (base / p).lexically_normal();
}

namespace {

void apply_override(toml::table& root, const std::string& setting, Diagnostics& out) {
    Location where{"--set " + setting.substr(0, setting.find('=')), 0, 0};
    auto eq = setting.find('=');
    if (eq == std::string::npos || eq == 0) {
        out.error(where, "", "expected KEY=VALUE, e.g. --set http.listen=127.0.0.1:0");
        return;
    }
    std::string key = setting.substr(0, eq);
    std::string value = setting.substr(eq + 1);
    std::string source = "--set " + key;
    std::optional<toml::table> parsed;
    try {
        parsed = toml::parse("v = " + value, source);
    } catch (const toml::parse_error&) {
        std::string quoted;
        sb::detail::append_json_string(quoted, value);
        try {
            parsed = toml::parse("v = " + quoted, source);
        } catch (const toml::parse_error&) {
            out.error(where, key, "cannot read the value");
            return;
        }
    }
    // Walk (and create) the tables down to the last key.
    toml::table* t = &root;
    std::size_t start = 0;
    for (;;) {
        auto dot = key.find('.', start);
        std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
        if (part.empty()) {
            out.error(where, key, "is not a key path");
            return;
        }
        if (dot == std::string::npos) {
            toml::node* v = parsed->get("v");
            t->erase(part);
            if (auto* tbl = v->as_table()) t->insert(part, std::move(*tbl));
            else if (auto* arr = v->as_array()) t->insert(part, std::move(*arr));
            else if (auto* str = v->as_string()) t->insert(part, std::move(*str));
            else if (auto* i = v->as_integer()) t->insert(part, std::move(*i));
            else if (auto* f = v->as_floating_point()) t->insert(part, std::move(*f));
            else if (auto* b = v->as_boolean()) t->insert(part, std::move(*b));
            return;
        }
        toml::node* next = t->get(part);
        if (!next) next = &t->insert(part, toml::table{}).first->second;
        if (!next->is_table()) {
            out.error(where, key, "'" + part + "' is not a table");
            return;
        }
        t = next->as_table();
        start = dot + 1;
    }
}

} // namespace

std::unique_ptr<Config> load_config(const std::filesystem::path& file, Diagnostics& out,
                                    const std::vector<std::string>& overrides) {
    auto c = std::make_unique<Config>();
    c->file = file;
    bool complete = false;
    c->root = load_files(file, out, complete);
    // A file that did not parse would only produce follow-on noise.
    if (!complete) return c;
    for (const auto& o : overrides) apply_override(c->root, o, out);
    validate_table(c->root, core_schema(), "", out);
    extract(*c, out);
    return c;
}

void bind_plugins(Config& config, const PluginLookup& find,
                  const std::vector<std::string>& available, Diagnostics& out) {
    static const char* kind_names[] = {"", "source", "destination", "transform"};
    for (InstanceConfig* inst : config.instances()) {
        if (inst->plugin.empty()) continue; // already reported as missing
        const toml::table* t = config.root.at_path(inst->key_path).as_table();
        const toml::node* plugin_node = t ? t->get("plugin") : nullptr;
        Location where = plugin_node ? location_of(*plugin_node) : inst->where;
        const sb_plugin_descriptor* d = find(inst->plugin);
        if (!d) {
            std::string msg = "unknown plugin '" + inst->plugin + "'; loaded plugins: " +
                              (available.empty() ? "none" : text::join(available, ", "));
            if (inst->enabled)
                out.error(where, inst->key_path + ".plugin", msg);
            else
                out.warn(where, inst->key_path + ".plugin", msg + " (instance is disabled)");
            continue;
        }
        if (d->kind != inst->kind) {
            int k = d->kind >= 1 && d->kind <= 3 ? d->kind : 0;
            out.error(where, inst->key_path + ".plugin",
                      "plugin '" + inst->plugin + "' is a " + kind_names[k] + " plugin; [" +
                          inst->key_path.substr(0, inst->key_path.find('.')) + "] needs a " +
                          kind_names[inst->kind] + " plugin");
            continue;
        }
        std::vector<std::string> problems;
        SpecPtr spec = spec_from_plugin(d->config_fields, d->n_config_fields, problems);
        for (const auto& p : problems)
            out.error(where, inst->key_path + ".plugin", "plugin '" + inst->plugin + "': " + p);
        std::string cfg_path = inst->key_path + ".config";
        if (inst->plugin_table) {
            validate_table(*inst->plugin_table, *spec, cfg_path, out);
        } else {
            // No [..config] table: still report required keys, at the instance.
            for (const auto& [name, field] : spec->fields)
                if (field->required)
                    out.error(inst->where, join_path(cfg_path, name),
                              "missing required key" +
                                  (field->description.empty() ? "" : " (" + field->description + ")"));
        }
        // Values with defaults applied (only well-typed ones; errors are
        // already in `out`).
        for (std::size_t i = 0; i < d->n_config_fields; ++i) {
            const sb_config_field& f = d->config_fields[i];
            if (!f.key) continue;
            const toml::node* n = inst->plugin_table ? inst->plugin_table->get(f.key) : nullptr;
            std::optional<toml::table> def;
            bool from_default = false;
            if (!n && f.default_value) {
                def = parse_literal(f.default_value);
                if (def) n = def->get("v");
                from_default = true;
            }
            if (!n) continue;
            const auto it = std::find_if(spec->fields.begin(), spec->fields.end(),
                                         [&](const auto& x) { return x.first == f.key; });
            if (it == spec->fields.end()) continue;
            Diagnostics check;
            validate(*n, *it->second, f.key, check);
            if (check.has_errors()) continue;
            PluginValue v = read_plugin_value(*n, f);
            v.from_default = from_default;
            if (from_default) v.where = inst->where;
            inst->values[f.key] = std::move(v);
        }
    }
}

bool resolve_secret(const std::string& reference, const std::filesystem::path& base_dir,
                    std::string& value, std::string& error) {
    if (reference.rfind("env:", 0) == 0) {
        std::string name = reference.substr(4);
        const char* v = std::getenv(name.c_str());
        if (!v) {
            error = "environment variable " + name + " is not set";
            return false;
        }
        if (!*v) {
            error = "environment variable " + name + " is empty";
            return false;
        }
        value = v;
        return true;
    }
    if (reference.rfind("file:", 0) == 0) {
        std::filesystem::path p = reference.substr(5);
        if (p.is_relative()) p = base_dir / p;
        std::error_code ec;
        auto size = std::filesystem::file_size(p, ec);
        if (ec) {
            error = "cannot read secret file " + p.string() + ": " + ec.message();
            return false;
        }
        if (size > 64 * 1024) {
            error = "secret file " + p.string() + " is larger than 64 KiB";
            return false;
        }
        std::ifstream in(p, std::ios::binary);
        if (!in) {
            error = "cannot open secret file " + p.string();
            return false;
        }
        std::ostringstream buf;
        buf << in.rdbuf();
        value = buf.str();
        while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
        if (value.empty()) {
            error = "secret file " + p.string() + " is empty";
            return false;
        }
        return true;
    }
    error = "not a secret reference";
    return false;
}

void resolve_secrets(Config& config, Diagnostics& out) {
    auto base_of = [](const Location& where) {
        return std::filesystem::path(where.file).parent_path();
    };
    auto warn_mode = [&](const std::string& reference, const Location& where, const std::string& key) {
        if (reference.rfind("file:", 0) != 0) return;
        std::filesystem::path p = reference.substr(5);
        if (p.is_relative()) p = base_of(where) / p;
        struct stat st{};
        if (::stat(p.c_str(), &st) == 0 && (st.st_mode & 0077))
            out.warn(where, key,
                     "secret file " + p.string() + " can be read by other users; chmod 600 it");
    };
    for (InstanceConfig* inst : config.instances()) {
        for (auto& [key, v] : inst->values) {
            if (!v.secret || v.multi) continue;
            std::string full = inst->key_path + ".config." + key;
            std::string resolved, error;
            if (!is_secret_reference(v.text)) continue; // reported by validation
            if (!resolve_secret(v.text, base_of(v.where), resolved, error)) {
                if (inst->enabled)
                    out.error(v.where, full, error);
                else
                    out.warn(v.where, full, error + " (instance is disabled)");
                continue;
            }
            warn_mode(v.text, v.where, full);
            v.text = std::move(resolved);
        }
    }
    std::vector<std::pair<std::string, const toml::node*>> core;
    collect_core_secrets(config.root, core_schema(), "", core);
    for (auto& [path, node] : core) {
        const std::string& ref = node->as_string()->get();
        if (!is_secret_reference(ref)) continue;
        std::string resolved, error;
        Location where = location_of(*node);
        if (!resolve_secret(ref, base_of(where), resolved, error)) {
            out.error(where, path, error);
            continue;
        }
        warn_mode(ref, where, path);
        config.secrets[path] = std::move(resolved);
    }
}

} // namespace switchboard::config
