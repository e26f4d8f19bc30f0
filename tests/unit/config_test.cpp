// Configuration validation: every bad config gets every error, each with
// file:line:column, the key path and a clear message; secrets never appear.

#include "config/config.hpp"

#include <switchboard/plugin.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

namespace fs = std::filesystem;
using namespace switchboard;

namespace {

// A plugin schema to validate instance sections against, as a plugin would
// declare it.
const char* const kModes[] = {"fast", "safe", nullptr};
const sb_config_field kFields[] = {
    {sizeof(sb_config_field), "token", SB_CFG_STRING, SB_CFG_REQUIRED | SB_CFG_SECRET, nullptr, 0, 0,
     "hook token", nullptr},
    {sizeof(sb_config_field), "port", SB_CFG_INT, SB_CFG_HAS_MIN | SB_CFG_HAS_MAX, "8000", 1, 65535,
     "port", nullptr},
    {sizeof(sb_config_field), "mode", SB_CFG_STRING, 0, "\"safe\"", 0, 0, "mode", kModes},
    {sizeof(sb_config_field), "interval", SB_CFG_DURATION, SB_CFG_HAS_MIN, "\"30s\"", 1000, 0,
     "poll interval", nullptr},
    {sizeof(sb_config_field), "names", SB_CFG_STRING, SB_CFG_MULTI, "[\"a\"]", 0, 0, "names",
     nullptr},
    {sizeof(sb_config_field), "dir", SB_CFG_PATH, 0, nullptr, 0, 0, "directory", nullptr},
    {sizeof(sb_config_field), "limit", SB_CFG_SIZE, 0, "\"1MiB\"", 0, 0, "limit", nullptr},
};

sb_plugin_descriptor make_descriptor(const char* name, sb_plugin_kind kind) {
    sb_plugin_descriptor d{};
    d.struct_size = sizeof d;
    d.abi_major = SB_ABI_MAJOR;
    d.abi_minor = SB_ABI_MINOR;
    d.name = name;
    d.version = "1.0.0";
    d.kind = kind;
    d.config_fields = kFields;
    d.n_config_fields = std::size(kFields);
    return d;
}

const sb_plugin_descriptor kDemoSource = make_descriptor("demo-source", SB_KIND_SOURCE);
const sb_plugin_descriptor kDemoSink = make_descriptor("demo-sink", SB_KIND_DESTINATION);

struct Dir {
    fs::path path;
    Dir() {
        char tmpl[] = "/tmp/sb-config-XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~Dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    void write(const std::string& name, const std::string& text) const {
        fs::create_directories((path / name).parent_path());
        std::ofstream(path / name) << text;
    }
};

struct Result {
    std::unique_ptr<config::Config> config;
    std::vector<std::string> lines; // diagnostics with the temp dir as "<dir>"
};

Result check(const Dir& dir, const std::string& main = "main.toml") {
    config::Diagnostics d;
    Result r;
    r.config = config::load_config(dir.path / main, d);
    config::bind_plugins(
        *r.config,
        [](const std::string& name) -> const sb_plugin_descriptor* {
            if (name == "demo-source") return &kDemoSource;
            if (name == "demo-sink") return &kDemoSink;
            return nullptr;
        },
        {"demo-sink", "demo-source"}, d);
    config::resolve_secrets(*r.config, d);
    d.sort();
    for (const auto& item : d.all()) {
        std::string s = item.str();
        std::string p = dir.path.string();
        for (auto at = s.find(p); at != std::string::npos; at = s.find(p))
            s.replace(at, p.size(), "<dir>");
        r.lines.push_back(s);
    }
    return r;
}

const char* kValidBase = R"([node]
data_dir = "data"
)";

} // namespace

TEST_CASE("a minimal config is valid and gets the documented defaults") {
    Dir dir;
    dir.write("main.toml", kValidBase);
    Result r = check(dir);
    CHECK(r.lines.empty());
    const config::Config& c = *r.config;
    CHECK(c.node.data_dir == dir.path / "data");
    CHECK(c.node.store == "sqlite");
    CHECK_FALSE(c.node.prepare_helpers); // the daemon then asks Journal::default_prepare_helpers()
    CHECK(c.http.enabled);
    CHECK(c.http.host == "127.0.0.1");
    CHECK(c.http.port == 8080);
    CHECK(c.http.max_body == 1024 * 1024);
    CHECK(c.retention.default_ms == 28LL * 86'400'000);
    CHECK(c.log.level == log::Level::Info);
}

TEST_CASE("bad configs: each error names file:line:column, key path and what is wrong") {
    struct Case {
        const char* name;
        std::string text;
        std::vector<std::string> expected;
    };
    const std::vector<Case> cases = {
        {"unknown key, with the valid keys and a suggestion",
         "[node]\ndata_dir = \"d\"\ndatadir = \"x\"\n",
         {"<dir>/main.toml:3:1: node.datadir: unknown key (did you mean 'data_dir'?); valid keys: "
          "name, data_dir, store, prepare_helpers, postgresql"}},
        {"unknown top-level section",
         std::string(kValidBase) + "[retension]\ndefault = \"28d\"\n",
         {"<dir>/main.toml:3:2: retension: unknown key (did you mean 'retention'?); valid keys: "
          "include, node, log, http, admin, plugins, sources, destinations, transforms, classify, route, "
          "profiles, retention"}},
        {"wrong type",
         std::string(kValidBase) + "[http]\nthreads = \"four\"\n",
         {"<dir>/main.toml:4:11: http.threads: expected an integer, found string"}},
        {"prepare_helpers: out of range",
         "[node]\ndata_dir = \"d\"\nprepare_helpers = 17\n",
         {"<dir>/main.toml:3:19: node.prepare_helpers: must be at most 16 (found 17)"}},
        {"prepare_helpers: wrong type",
         "[node]\ndata_dir = \"d\"\nprepare_helpers = \"auto\"\n",
         {"<dir>/main.toml:3:19: node.prepare_helpers: expected an integer, found string"}},
        {"out of range",
         std::string(kValidBase) + "[http]\nthreads = 0\nmax_body = \"512MiB\"\n",
         {"<dir>/main.toml:4:11: http.threads: must be at least 1 (found 0)",
          "<dir>/main.toml:5:12: http.max_body: must be at most 268435456 bytes (found 536870912 "
          "bytes)"}},
        {"malformed duration",
         std::string(kValidBase) + "[retention]\ndefault = \"28 days\"\n",
         {"<dir>/main.toml:4:11: retention.default: expected a duration such as \"500ms\", \"30s\", "
          "\"5m\", \"12h\" or \"28d\", found string"}},
        {"missing required key",
         "[node]\nname = \"n1\"\n",
         {"<dir>/main.toml:1:1: node.data_dir: missing required key (where the journal, outbox, "
          "audit and quarantine live)"}},
        {"missing required section",
         "[http]\nenabled = false\n",
         {"<dir>/main.toml:1:1: node: missing required key"}},
        {"inline secret in a plugin section (the value is never echoed)",
         std::string(kValidBase) +
             "[sources.web]\nplugin = \"demo-source\"\n[sources.web.config]\ntoken = "
             "\"s3cr3t-literal\"\n",
         {"<dir>/main.toml:6:9: sources.web.config.token: is a secret and must not be written in "
          "the file: use \"env:NAME\" or \"file:PATH\""}},
        {"bad plugin section: unknown key, wrong type, bad choice, range",
         std::string(kValidBase) +
             "[sources.web]\nplugin = \"demo-source\"\n[sources.web.config]\ntoken = "
             "\"env:SB_TEST_TOKEN\"\ntokn = 1\nport = \"80\"\nmode = \"turbo\"\ninterval = "
             "\"10ms\"\n",
         {"<dir>/main.toml:7:1: sources.web.config.tokn: unknown key (did you mean 'token'?); valid "
          "keys: token, port, mode, interval, names, dir, limit",
          "<dir>/main.toml:8:8: sources.web.config.port: expected an integer, found string",
          "<dir>/main.toml:9:8: sources.web.config.mode: must be one of: fast, safe (found \"turbo\")",
          "<dir>/main.toml:10:12: sources.web.config.interval: must be at least 1s (found 10ms)"}},
        {"plugin section missing its required key, with no config table at all",
         std::string(kValidBase) + "[sources.web]\nplugin = \"demo-source\"\n",
         {"<dir>/main.toml:3:1: sources.web.config.token: missing required key (hook token)"}},
        {"unknown plugin lists the loaded ones",
         std::string(kValidBase) + "[sources.web]\nplugin = \"landbott\"\n",
         {"<dir>/main.toml:4:10: sources.web.plugin: unknown plugin 'landbott'; loaded plugins: "
          "demo-sink, demo-source"}},
        {"plugin of the wrong kind",
         std::string(kValidBase) +
             "[sources.web]\nplugin = \"demo-sink\"\n[sources.web.config]\ntoken = \"env:X\"\n",
         {"<dir>/main.toml:4:10: sources.web.plugin: plugin 'demo-sink' is a destination plugin; "
          "[sources] needs a source plugin"}},
        {"two errors at once, in two sections, reported in file order",
         "[http]\nlisten = \"localhost\"\n[node]\ndata_dir = 5\n",
         {"<dir>/main.toml:2:10: http.listen: expected \"HOST:PORT\" such as \"127.0.0.1:8080\" "
          "(port 0 picks a free port)",
          "<dir>/main.toml:4:12: node.data_dir: expected a path (string), found integer"}},
        {"listening beyond loopback needs allow_remote",
         std::string(kValidBase) + "[http]\nlisten = \"0.0.0.0:8080\"\n",
         {"<dir>/main.toml:4:10: http.listen: listens beyond this machine; set http.allow_remote = "
          "true to allow it (and put TLS in front of it)"}},
        {"instance names follow the identifier rule",
         std::string(kValidBase) + "[destinations.Revenues]\nplugin = \"demo-sink\"\n",
         {"<dir>/main.toml:3:15: destinations.Revenues: is not a valid destination instance name: "
          "use lowercase letters, digits, '-' and '_', starting with a letter or digit"}},
        {"routes must name existing destinations and profiles",
         std::string(kValidBase) +
             "[[route]]\ncategory = \"council_tax\"\ndestination = \"revs\"\npurpose = \"p\"\nprofile "
             "= \"x\"\n",
         {"<dir>/main.toml:5:15: route[0].destination: no destination named 'revs' in [destinations]",
          "<dir>/main.toml:7:11: route[0].profile: no profile named 'x' in [profiles]"}},
        {"profile transforms and field paths are checked",
         std::string(kValidBase) +
             "[profiles.revs.fields]\n\"citizen.name\" = \"keep\"\n\"contact.phone\" = \"mask:x\"\n"
             "\"a..b\" = \"keep\"\n",
         {"<dir>/main.toml:5:19: profiles.revs.fields.\"contact.phone\": expected a transform: keep, "
          "mask, mask:N (keep last N), hash, redact, generalise:postcode, generalise:month or "
          "generalise:age_band",
          "<dir>/main.toml:6:1: profiles.revs.fields.\"a..b\": is not a field path (e.g. "
          "citizen.name, content.turns[*].text, citizen.*)"}},
        {"classification rules need exactly one matcher",
         std::string(kValidBase) +
             "[[classify.rule]]\ncategory = \"bins\"\nfield = \"content.text\"\nequals = \"x\"\n"
             "contains = \"y\"\n",
         {"<dir>/main.toml:3:1: classify.rule[0]: needs exactly one of equals, one_of, contains, "
          "regex or keywords"}},
        {"TOML syntax error",
         "[node]\ndata_dir = \"unterminated\n",
         {"<dir>/main.toml:2:25: Error while parsing string: unescaped control characters other than "
          "TAB (U+0009) are explicitly prohibited"}},
        {"secret from an unset environment variable",
         std::string(kValidBase) +
             "[sources.web]\nplugin = \"demo-source\"\n[sources.web.config]\ntoken = "
             "\"env:SB_TEST_UNSET_VARIABLE\"\n",
         {"<dir>/main.toml:6:9: sources.web.config.token: environment variable "
          "SB_TEST_UNSET_VARIABLE is not set"}},
    };
    setenv("SB_TEST_TOKEN", "token-from-env", 1);
    unsetenv("SB_TEST_UNSET_VARIABLE");
    for (const Case& c : cases) {
        SECTION(c.name) {
            Dir dir;
            dir.write("main.toml", c.text);
            Result r = check(dir);
            CHECK(r.lines == c.expected);
            for (const auto& line : r.lines) CHECK(line.find("s3cr3t-literal") == std::string::npos);
        }
    }
}

TEST_CASE("includes: errors name the included file; keys defined twice name both places") {
    Dir dir;
    dir.write("main.toml", "include = [\"more/departments.toml\"]\n" + std::string(kValidBase) +
                               "[http]\nthreads = 4\n");
    dir.write("more/departments.toml", "[http]\nthreads = 2\n[destinations.revs]\nplugin = "
                                       "\"demo-sink\"\n[destinations.revs.config]\ntoken = "
                                       "\"file:token.txt\"\nport = 70000\n");
    dir.write("more/token.txt", "token-from-file\n");
    fs::permissions(dir.path / "more/token.txt", fs::perms::owner_read | fs::perms::owner_write);
    Result r = check(dir);
    CHECK(r.lines ==
          std::vector<std::string>{
              "<dir>/more/departments.toml:2:1: http.threads: defined again; first defined at "
              "<dir>/main.toml:5:11",
              "<dir>/more/departments.toml:7:8: destinations.revs.config.port: must be at most "
              "65535 (found 70000)"});
    // Relative secret files are found next to the file that names them.
    CHECK(r.config->destinations.at(0).values.at("token").text == "token-from-file");
}

TEST_CASE("secrets resolve from env: and file:, and plugin values get their defaults") {
    Dir dir;
    setenv("SB_TEST_TOKEN", "token-from-env", 1);
    dir.write("main.toml", std::string(kValidBase) +
                               "[sources.web]\nplugin = \"demo-source\"\n[sources.web.config]\n"
                               "token = \"env:SB_TEST_TOKEN\"\nnames = [\"x\", \"y\"]\ndir = \"in\"\n"
                               "[destinations.revs]\nplugin = \"demo-sink\"\n"
                               "[destinations.revs.config]\ntoken = \"file:secret.txt\"\n");
    dir.write("secret.txt", "token-from-file\n");
    fs::permissions(dir.path / "secret.txt", fs::perms::owner_read | fs::perms::owner_write);
    Result r = check(dir);
    REQUIRE(r.lines.empty());
    const auto& src = r.config->sources.at(0).values;
    CHECK(src.at("token").text == "token-from-env");
    CHECK(src.at("port").integer == 8000);
    CHECK(src.at("port").from_default);
    CHECK(src.at("mode").text == "safe");
    CHECK(src.at("interval").integer == 30'000);
    CHECK(src.at("limit").integer == 1024 * 1024);
    CHECK(src.at("names").items == std::vector<std::string>{"x", "y"});
    CHECK(src.at("dir").text == (dir.path / "in").string());
    CHECK(r.config->destinations.at(0).values.at("token").text == "token-from-file");
}

TEST_CASE("a secret file readable by others is a warning, not an error") {
    Dir dir;
    dir.write("main.toml", std::string(kValidBase) +
                               "[sources.web]\nplugin = \"demo-source\"\n[sources.web.config]\n"
                               "token = \"file:secret.txt\"\n");
    dir.write("secret.txt", "t\n");
    fs::permissions(dir.path / "secret.txt", fs::perms::owner_read | fs::perms::group_read |
                                                 fs::perms::others_read);
    Result r = check(dir);
    CHECK(r.lines == std::vector<std::string>{
                         "<dir>/main.toml:6:9: warning: sources.web.config.token: secret file "
                         "<dir>/secret.txt can be read by other users; chmod 600 it"});
}

TEST_CASE("include cycles and missing includes are errors") {
    Dir dir;
    dir.write("main.toml", "include = [\"a.toml\", \"missing.toml\"]\n" + std::string(kValidBase));
    dir.write("a.toml", "include = \"main.toml\"\n");
    Result r = check(dir);
    REQUIRE(r.lines.size() == 2);
    CHECK(r.lines[0] == "<dir>/a.toml:1:11: include: include cycle: <dir>/main.toml includes itself");
    CHECK(r.lines[1] ==
          "<dir>/main.toml:1:22: cannot read <dir>/missing.toml: No such file or directory");
}

namespace {
void collect_keys(const config::Spec& spec, const std::string& path, std::vector<std::string>& out) {
    for (const auto& [key, child] : spec.fields) {
        std::string full = path.empty() ? key : path + "." + key;
        out.push_back(full);
        collect_keys(*child, full, out);
        if (child->element) collect_keys(*child->element, full, out);
    }
    if (spec.any_value) collect_keys(*spec.any_value, path + ".NAME", out);
}
} // namespace

TEST_CASE("docs/configuration.md documents every key of the core schema") {
    std::ifstream in(std::string(std::getenv("SB_SOURCE_ROOT")) + "/docs/configuration.md");
    REQUIRE(in);
    std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> keys;
    collect_keys(config::core_schema(), "", keys);
    REQUIRE(keys.size() > 40);
    for (const auto& k : keys) {
        // Each key appears in backquotes (`key`, `table.key`) or as a table
        // heading ([table], [[table]]).
        std::string last = k.substr(k.rfind('.') + 1);
        INFO(k);
        bool found = false;
        for (const std::string& form : {"`" + last + "`", "`" + last + ".", "." + last + "`",
                                        "[" + last + "]", "[" + last + ".", "." + last + "]"})
            found = found || doc.find(form) != std::string::npos;
        CHECK(found);
    }
}
