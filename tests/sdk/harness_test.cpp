// The test harness (testing.hpp) driving the memory test plugins through
// their built .so files, plus small plugins compiled in for what those two do
// not use (config types, timers).
#include <catch2/catch.hpp>

#include <switchboard/testing.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using sb::testing::Harness;
using sb::testing::toml_string;

namespace {

std::string module(const std::string& name) {
    const char* dir = std::getenv("SB_PLUGIN_DIR");
    if (!dir) FAIL("SB_PLUGIN_DIR is not set (run through meson test)");
    return std::string(dir) + "/testing/" + name + "/" + name + ".so";
}

std::vector<std::string> lines_of(const fs::path& file) {
    std::ifstream in(file);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}

// Polls until the source says it is idle; returns how many polls did work.
int drain(Harness& h) {
    int n = 0;
    while (h.poll() == SB_OK) ++n;
    return n;
}

// --- plugins compiled into this test --------------------------------------

// Reads every config type; what it read is left in `seen`.
struct Seen {
    std::int64_t n = 0, wait = 0, limit = 0;
    double ratio = 0;
    bool flag = true;
    std::string name, level, token;
    std::optional<std::string> dir;
    std::vector<std::string> tags, waits;
};
Seen seen;

class ConfigProbe : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "config-probe";
        i.version = "1";
        i.kind = SB_KIND_TRANSFORM;
        i.config = {
            sb::Field::integer("n").range(1, 100).fallback("5"),
            sb::Field::duration("wait").min(1000).fallback("\"30s\""),
            sb::Field::size("limit").fallback("\"64KiB\""),
            sb::Field::number("ratio").fallback("0.5"),
            sb::Field::boolean("flag").fallback("false"),
            sb::Field::string("name").required(),
            sb::Field::string("level").choices({"low", "high"}).fallback("\"low\""),
            sb::Field::path("dir"),
            sb::Field::string("token").secret(),
            sb::Field::string("tags").multi().min(1),
            sb::Field::duration("waits").multi(),
        };
        return i;
    }
    explicit ConfigProbe(sb::Host host) : sb::Plugin(host) {
        seen = Seen{};
        seen.n = host.integer("n");
        seen.wait = host.duration_ms("wait");
        seen.limit = host.integer("limit");
        seen.ratio = host.number("ratio");
        seen.flag = host.boolean("flag");
        seen.name = host.string("name");
        seen.level = host.string("level");
        seen.token = host.string_opt("token").value_or("");
        seen.dir = host.string_opt("dir");
        seen.tags = host.list("tags");
        seen.waits = host.list("waits");
    }
    sb::Status transform(sb::MutableRecord& r) {
        r.set("probe.seen", true, "test.flag");
        return SB_OK;
    }
};

// Timers: a repeating tick that emits, a one-shot, and one that cancels itself.
class Ticker : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "ticker";
        i.version = "1";
        i.kind = SB_KIND_SOURCE;
        i.capabilities = SB_CAP_TIMERS;
        return i;
    }
    explicit Ticker(sb::Host host) : sb::Plugin(host) {}
    void start() {
        host().timer(1000, 500, [this] {
            ticks.push_back(host().now_ms());
            sb::Record r = host().record();
            r.set("tick", static_cast<std::int64_t>(ticks.size()), "reference.internal");
            host().emit(std::move(r));
        });
        host().timer(200, 0, [] { ++once; });
        self_ = host().timer(100, 100, [this] {
            if (++selfish == 3) host().cancel_timer(self_);
        });
    }
    static inline std::vector<std::int64_t> ticks;
    static inline int once = 0, selfish = 0;

private:
    std::uint64_t self_ = 0;
};

// Writes audit entries (ABI 1.1) from poll; keeps each answer.
class Auditor : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "auditor";
        i.version = "1";
        i.kind = SB_KIND_SOURCE;
        return i;
    }
    explicit Auditor(sb::Host host) : sb::Plugin(host) {}
    sb::Status poll() {
        answers.push_back(host().audit("key_refused", "key=K1 from tcp://10.0.0.1:5555\r\nx=y"));
        answers.push_back(host().audit("erase_confirmed", std::string(300, 'z'), "R4-1"));
        answers.push_back(host().audit("Not-A-Token", "x"));
        answers.push_back(host().audit("odd_record", "x", "R4 1"));
        return SB_IDLE;
    }
    static inline std::vector<sb::Status> answers;
};

// Does what the daemon refuses: a timer without SB_CAP_TIMERS, or a route
// registered outside start.
class Careless : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "careless";
        i.version = "1";
        i.kind = SB_KIND_SOURCE;
        i.capabilities = SB_CAP_HTTP;
        i.config = {sb::Field::boolean("route_in_create").fallback("false")};
        return i;
    }
    explicit Careless(sb::Host host) : sb::Plugin(host) {
        if (host.boolean("route_in_create"))
            host.route("GET", "/plugins/careless", [](const sb::HttpRequest&, sb::HttpResponse&) {});
    }
    void start() { host().timer(10, 0, [] {}); }
};

} // namespace

// ---------------------------------------------------------------------------
// Loading

TEST_CASE("harness: a file that cannot be loaded is refused with its path") {
    try {
        Harness h("/nonexistent/dir/nothing.so");
        FAIL("no exception");
    } catch (const std::runtime_error& e) {
        CHECK(contains(e.what(), "/nonexistent/dir/nothing.so"));
        CHECK(contains(e.what(), "cannot load"));
    }
    try {
        Harness h("libm.so.6");
        FAIL("no exception");
    } catch (const std::runtime_error& e) {
        CHECK(contains(e.what(), "no exported symbol switchboard_plugin_descriptor"));
    }
}

TEST_CASE("harness: a descriptor for another ABI major or a newer minor is refused") {
    sb_plugin_descriptor d = *sb::detail::descriptor<ConfigProbe>();
    d.abi_major = SB_ABI_MAJOR + 1;
    CHECK_THROWS_WITH(Harness(&d), Catch::Contains("refused: expected plugin ABI major 1, found 2"));
    d.abi_major = SB_ABI_MAJOR;
    d.abi_minor = SB_ABI_MINOR + 1;
    CHECK_THROWS_WITH(Harness(&d),
                      Catch::Contains("refused: expected plugin ABI minor 4 or older, found 5"));
    d.abi_minor = SB_ABI_MINOR;
    const int bogus = 42; // what a C plugin may put in an enum field
    std::memcpy(&d.kind, &bogus, sizeof bogus);
    CHECK_THROWS_WITH(Harness(&d),
                      Catch::Contains("expected kind source, destination or transform, found 42"));
    d.kind = SB_KIND_TRANSFORM;
    d.destroy = nullptr;
    CHECK_THROWS_WITH(Harness(&d), Catch::Contains("expected create and destroy functions, found none"));
}

TEST_CASE("harness: schema mistakes are refused when the plugin is loaded") {
    sb_plugin_descriptor d = *sb::detail::descriptor<ConfigProbe>();
    std::vector<sb_config_field> fields(d.config_fields, d.config_fields + d.n_config_fields);
    d.config_fields = fields.data();
    REQUIRE(std::string(fields[0].key) == "n");
    REQUIRE(std::string(fields[5].key) == "name");
    REQUIRE(std::string(fields[7].key) == "dir");

    fields[0].default_value = "\"five\"";
    CHECK_THROWS_WITH(Harness(&d), Catch::Contains("config key 'n'") &&
                                       Catch::Contains("schema default") &&
                                       Catch::Contains("expected an integer"));
    fields[0].default_value = "500";
    CHECK_THROWS_WITH(Harness(&d), Catch::Contains("500 is above the maximum 100"));
    fields[0].default_value = "5";
    fields[7].flags |= SB_CFG_SECRET;
    CHECK_THROWS_WITH(Harness(&d), Catch::Contains("'dir' is secret but not a string"));
    fields[7].flags = 0;
    fields[5].default_value = "\"x\"";
    CHECK_THROWS_WITH(Harness(&d), Catch::Contains("'name' is required and has a default"));
    fields[5].default_value = nullptr;
    fields[7].key = "n";
    CHECK_THROWS_WITH(Harness(&d), Catch::Contains("'n' is declared twice"));
    fields[7].key = "bad key";
    CHECK_THROWS_WITH(Harness(&d), Catch::Contains("expected a key of letters, digits, '-' and '_', "
                                                   "found \"bad key\""));
}

TEST_CASE("harness: config fields are read with the plugin's own struct_size") {
    // A plugin built when sb_config_field ended before `choices`.
    constexpr std::size_t old_size = offsetof(sb_config_field, choices);
    sb_config_field a{};
    a.struct_size = old_size;
    a.key = "alpha";
    a.type = SB_CFG_INT;
    a.default_value = "1";
    sb_config_field b = a;
    b.key = "beta";
    b.type = SB_CFG_STRING;
    b.default_value = "\"x\"";
    alignas(sb_config_field) unsigned char table[2 * old_size];
    std::memcpy(table, &a, old_size);
    std::memcpy(table + old_size, &b, old_size);
    sb_plugin_descriptor d = *sb::detail::descriptor<Ticker>();
    d.config_fields = reinterpret_cast<const sb_config_field*>(table);
    d.n_config_fields = 2;
    Harness h(&d);
    REQUIRE(h.schema().size() == 2);
    CHECK(std::string(h.schema()[1].key) == "beta");
    CHECK(h.schema()[1].type == SB_CFG_STRING);
    CHECK(h.schema()[1].choices == nullptr);
}

TEST_CASE("harness: the host table is complete") {
    Harness h(module("memory-sink"));
    const sb_host_api& api = h.api();
    CHECK(api.struct_size == sizeof(sb_host_api));
    CHECK(api.abi_major == SB_ABI_MAJOR);
    CHECK(api.abi_minor == SB_ABI_MINOR);
    // Every member after the version header is a function pointer.
    using fn = void (*)();
    const auto* bytes = reinterpret_cast<const unsigned char*>(&api);
    std::size_t n = 0;
    for (std::size_t off = offsetof(sb_host_api, set_error); off < sizeof api; off += sizeof(fn)) {
        fn p;
        std::memcpy(&p, bytes + off, sizeof p);
        INFO("host table slot at offset " << off);
        CHECK(p != nullptr);
        ++n;
    }
    CHECK(n >= 49); // as of ABI 1.3
}

TEST_CASE("harness: audit entries (ABI 1.1) are collected as the core would store them") {
    Harness h(sb::detail::descriptor<Auditor>());
    Auditor::answers.clear();
    h.create();
    h.start();
    h.poll();
    REQUIRE(Auditor::answers.size() == 4);
    CHECK(Auditor::answers[0] == SB_OK);
    CHECK(Auditor::answers[1] == SB_OK);
    CHECK(Auditor::answers[2] == SB_ERR_INVALID);
    CHECK(Auditor::answers[3] == SB_ERR_INVALID);
    REQUIRE(h.audits().size() == 2);
    CHECK(h.audits()[0].event == "key_refused");
    CHECK(h.audits()[0].record_id.empty());
    CHECK(h.audits()[0].detail == "key=K1 from tcp://10.0.0.1:5555  x=y");
    CHECK(h.audits()[1].record_id == "R4-1");
    CHECK(h.audits()[1].detail == std::string(253, 'z') + "...");
    CHECK(h.audits("erase_confirmed").size() == 1);
    CHECK(h.logged("audit event is not [a-z_]{1,32}"));

    // A host without an audit trail answers SB_ERR_UNAVAILABLE.
    h.audit_available(false);
    Auditor::answers.clear();
    h.poll();
    CHECK(Auditor::answers[0] == SB_ERR_UNAVAILABLE);
    CHECK(h.audits().size() == 2);
    h.stop();
}

TEST_CASE("sb::Host::audit checks the host table's size: an ABI 1.0 host has no audit") {
    Harness h(sb::detail::descriptor<Auditor>());
    sb_host_api old = h.api();
    old.struct_size = offsetof(sb_host_api, audit); // what a 1.0 host stamps
    sb::Host host(&old, nullptr, nullptr);
    CHECK_FALSE(host.can_audit());
    CHECK(host.audit("anything", "x") == SB_ERR_UNSUPPORTED);
    sb::Host current(&h.api(), nullptr, nullptr);
    CHECK(current.can_audit());
}

TEST_CASE("memory-source: descriptor, capabilities and schema") {
    Harness h(module("memory-source"));
    const sb_plugin_descriptor& d = h.descriptor();
    CHECK(std::string(d.name) == "memory-source");
    CHECK(d.kind == SB_KIND_SOURCE);
    CHECK(d.abi_major == SB_ABI_MAJOR);
    CHECK((d.capabilities & SB_CAP_POLL) != 0);  // derived from poll()
    CHECK((d.capabilities & SB_CAP_ERASE) != 0); // derived from erase()
    CHECK((d.capabilities & SB_CAP_HTTP) != 0);  // declared
    CHECK((d.capabilities & SB_CAP_TIMERS) == 0);
    CHECK(d.poll != nullptr);
    CHECK(d.start != nullptr);
    CHECK(d.deliver == nullptr);
    std::vector<std::string> cats;
    for (const char* const* c = d.data_categories; *c; ++c) cats.emplace_back(*c);
    CHECK(cats == std::vector<std::string>{"identity.name", "contact.email", "content.free_text",
                                           "reference.internal", "classification.hint"});

    const auto& schema = h.schema();
    REQUIRE(schema.size() == 6);
    std::vector<std::string> keys;
    for (const auto& f : schema) keys.emplace_back(f.key);
    CHECK(keys == std::vector<std::string>{"count", "interval", "channel", "category_hint",
                                           "fail_start", "throw_in_create"});
    CHECK(schema[0].type == SB_CFG_INT);
    CHECK(schema[0].flags == SB_CFG_HAS_MIN);
    CHECK(schema[0].min == 0);
    CHECK(std::string(schema[0].default_value) == "10");
    CHECK(schema[1].type == SB_CFG_DURATION);
    CHECK(std::string(schema[1].default_value) == "\"100ms\"");
    CHECK(schema[2].type == SB_CFG_STRING);
    CHECK(schema[4].type == SB_CFG_BOOL);
    for (const auto& f : schema) {
        INFO(f.key);
        CHECK((f.flags & SB_CFG_REQUIRED) == 0);
        CHECK(f.default_value != nullptr);
        CHECK(std::strlen(f.description) > 0);
    }
}

TEST_CASE("memory-sink: descriptor, capabilities and schema") {
    Harness h(module("memory-sink"));
    const sb_plugin_descriptor& d = h.descriptor();
    CHECK(std::string(d.name) == "memory-sink");
    CHECK(d.kind == SB_KIND_DESTINATION);
    CHECK(d.deliver != nullptr);
    CHECK(d.flush != nullptr);
    CHECK(d.poll == nullptr);
    CHECK((d.capabilities & SB_CAP_ERASE) != 0);
    CHECK((d.capabilities & SB_CAP_POLL) == 0);
    CHECK((d.capabilities & SB_CAP_HTTP) != 0);
    CHECK((d.capabilities & SB_CAP_JSON_RECORDS) != 0);
    const auto& schema = h.schema();
    REQUIRE(schema.size() == 3);
    CHECK(std::string(schema[0].key) == "mode");
    REQUIRE(schema[0].choices != nullptr);
    CHECK(std::string(schema[0].choices[0]) == "ok");
    CHECK(std::string(schema[0].choices[1]) == "transient");
    CHECK(std::string(schema[0].choices[2]) == "permanent");
    CHECK(std::string(schema[0].choices[3]) == "read-fields");
    CHECK(schema[0].choices[4] == nullptr);
    CHECK(std::string(schema[1].key) == "fail_first");
    CHECK(std::string(schema[2].key) == "output");
    CHECK(schema[2].type == SB_CFG_PATH);
    CHECK(schema[2].default_value == nullptr);
    CHECK(schema[2].flags == 0);
}

// ---------------------------------------------------------------------------
// Config, as the daemon validates it

TEST_CASE("config: defaults are applied and read with their types") {
    Harness h(sb::detail::descriptor<ConfigProbe>());
    h.config("name", "\"probe\"");
    REQUIRE(h.create() == SB_OK);
    CHECK(seen.n == 5);
    CHECK(seen.wait == 30'000);
    CHECK(seen.limit == 64 * 1024);
    CHECK(seen.ratio == 0.5);
    CHECK(seen.flag == false);
    CHECK(seen.name == "probe");
    CHECK(seen.level == "low");
    CHECK_FALSE(seen.dir.has_value());
    CHECK(seen.tags.empty());
    CHECK(seen.token.empty());
}

TEST_CASE("config: unknown, missing and mistyped keys throw, naming the key") {
    Harness h(sb::detail::descriptor<ConfigProbe>());
    CHECK_THROWS_WITH(h.create(), Catch::Contains("'name'") && Catch::Contains("is required"));
    h.config("name", "\"p\"").config("colour", "\"red\"");
    CHECK_THROWS_WITH(h.create(), Catch::Contains("unknown config key 'colour'") &&
                                      Catch::Contains("valid keys: n, wait, limit, ratio") &&
                                      Catch::Contains("instance test"));
    h.unset("colour");

    auto refused = [&](const char* key, const char* value, const char* why) {
        INFO(key << " = " << value);
        h.config(key, value);
        CHECK_THROWS_WITH(h.create(), Catch::Contains(std::string("'") + key + "'") &&
                                          Catch::Contains(why));
        CHECK_FALSE(h.created());
        if (std::string(key) == "name")
            h.config("name", "\"p\"");
        else
            h.unset(key);
    };
    refused("n", "\"five\"", "expected an integer");
    refused("n", "0", "0 is below the minimum 1");
    refused("n", "101", "101 is above the maximum 100");
    refused("n", "1.5", "expected an integer");
    refused("flag", "\"yes\"", "expected a boolean");
    refused("name", "probe", "not a TOML value");
    refused("name", "[\"a\"]", "not an array");
    refused("level", "\"mid\"", "must be one of: low, high");
    refused("wait", "\"soon\"", "expected a duration");
    refused("wait", "\"30\"", "expected a duration"); // a unit is required
    refused("wait", "30", "expected a duration");
    refused("wait", "\"500ms\"", "500 ms is below the minimum 1000 ms");
    refused("limit", "\"lots\"", "expected a size");
    refused("limit", "-1", "expected a size");
    refused("tags", "\"a\"", "expected an array");
    refused("tags", "[]", "needs at least 1 element");
    refused("waits", "[\"1s\", 5]", "expected a duration");
    refused("dir", "\"\"", "the path is empty");
    refused("token", "\"hunter2\"", "\"env:NAME\" or \"file:PATH\"");
    refused("token", "\"env:SB_HARNESS_TEST_UNSET\"", "SB_HARNESS_TEST_UNSET is not set");
    CHECK_FALSE(h.logged("hunter2"));
    // A plain-text secret is never repeated in the message.
    h.config("token", "\"hunter2\"");
    try {
        h.create();
    } catch (const std::runtime_error& e) {
        CHECK_FALSE(contains(e.what(), "hunter2"));
    }
}

TEST_CASE("config: durations, sizes, floats, lists, strings and secrets") {
    Harness h(sb::detail::descriptor<ConfigProbe>());
    auto with = [&](const char* key, const std::string& value) {
        h.destroy();
        h.config(key, value);
        REQUIRE(h.create() == SB_OK);
    };
    h.config("name", "\"p\"");
    for (auto [text, ms] : std::vector<std::pair<const char*, std::int64_t>>{
             {"\"1500ms\"", 1500}, {"\"30s\"", 30'000}, {"\"5m\"", 300'000},
             {"\"12h\"", 43'200'000}, {"\"28d\"", 2'419'200'000}, {"\"1h30m\"", 5'400'000}}) {
        with("wait", text);
        CHECK(seen.wait == ms);
    }
    for (auto [text, bytes] : std::vector<std::pair<const char*, std::int64_t>>{
             {"\"512\"", 512}, {"512", 512}, {"\"64KiB\"", 65'536}, {"\"16MiB\"", 16'777'216},
             {"\"1GiB\"", 1'073'741'824}, {"\"10KB\"", 10'000}, {"1_000", 1000}}) {
        with("limit", text);
        CHECK(seen.limit == bytes);
    }
    with("ratio", "1");
    CHECK(seen.ratio == 1.0);
    with("ratio", "2.5e-1");
    CHECK(seen.ratio == 0.25);
    with("tags", "[\"a\", 'b',\n \"c\",]");
    CHECK(seen.tags == std::vector<std::string>{"a", "b", "c"});
    with("waits", "[\"1s\", \"2m\"]");
    CHECK(seen.waits == std::vector<std::string>{"1s", "2m"});
    with("name", "\"caf\\u00e9 \\\"quoted\\\"\\n\"");
    CHECK(seen.name == "caf\xc3\xa9 \"quoted\"\n");
    with("name", "'C:\\raw'");
    CHECK(seen.name == "C:\\raw");
    with("name", toml_string("tab\there \"q\" back\\slash \x01\x7f"));
    CHECK(seen.name == "tab\there \"q\" back\\slash \x01\x7f");
    with("dir", "\"spool/in\"");
    CHECK(seen.dir == "spool/in");
    with("flag", "true");
    CHECK(seen.flag);

    ::setenv("SB_HARNESS_TEST_TOKEN", "s3cret", 1);
    with("token", "\"env:SB_HARNESS_TEST_TOKEN\"");
    CHECK(seen.token == "s3cret");
    fs::path file = h.data_dir() / "token.txt";
    std::ofstream(file) << "from-file\n";
    with("token", toml_string("file:" + file.string()));
    CHECK(seen.token == "from-file");
}

TEST_CASE("config: a transform plugin runs through the harness") {
    Harness h(sb::detail::descriptor<ConfigProbe>());
    h.config("name", "\"p\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    auto rec = h.record().set("a", "x", "test.cat");
    CHECK(h.transform(rec) == SB_OK);
    CHECK(rec.value("probe.seen") == "true");
    CHECK(rec.category("probe.seen") == "test.flag");
    CHECK(h.poll() == SB_ERR_UNSUPPORTED);
}

// ---------------------------------------------------------------------------
// Failures become a status and a message, never a crash

TEST_CASE("memory-source: an exception in the constructor becomes a status and a message") {
    Harness h(module("memory-source"));
    h.config("throw_in_create", "true");
    CHECK(h.create() == SB_ERR_INTERNAL);
    CHECK_FALSE(h.created());
    CHECK(h.last_error() == "throw_in_create is set");
    CHECK(h.logged("create returned internal: throw_in_create is set"));
    CHECK_THROWS_AS(h.start(), std::logic_error);

    h.config("throw_in_create", "false");
    CHECK(h.create() == SB_OK);
    CHECK(h.last_error().empty());
}

TEST_CASE("memory-source: a failing start is reported and registers nothing") {
    Harness h(module("memory-source"));
    h.config("fail_start", "true");
    REQUIRE(h.create() == SB_OK);
    CHECK(h.start() == SB_ERR_INVALID);
    CHECK(h.last_error() == "fail_start is set");
    CHECK(h.logged("start returned invalid: fail_start is set"));
    CHECK_FALSE(h.started());
    CHECK(h.routes().empty());
    CHECK(h.http("POST", "/hooks/memory/test", "a\tb\tc").status == 404);
    h.destroy();
    CHECK_FALSE(h.created());
}

// ---------------------------------------------------------------------------
// memory-source

TEST_CASE("memory-source: polling emits `count` records with their fields and categories") {
    Harness h(module("memory-source"));
    h.config("count", "3").config("interval", "\"0ms\"").config("category_hint", "\"council_tax\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(drain(h) == 3);
    CHECK(h.poll() == SB_IDLE);
    REQUIRE(h.emitted().size() == 3);

    const auto& r = h.emitted()[0];
    CHECK(r.value("citizen.name") == "Test Person 1");
    CHECK(r.category("citizen.name") == "identity.name");
    CHECK(r.value("contact.email") == "person-1@example.org");
    CHECK(r.category("contact.email") == "contact.email");
    CHECK(r.value("content.text") == "Test message 1");
    CHECK(r.category("content.text") == "content.free_text");
    REQUIRE(r.field("ref.sequence"));
    CHECK(r.field("ref.sequence")->type == SB_VALUE_INT);
    CHECK(r.field("ref.sequence")->i == 1);
    CHECK(r.category("ref.sequence") == "reference.internal");
    CHECK(r.value("hints.category") == "council_tax");
    CHECK(r.category("hints.category") == "classification.hint");
    CHECK(r.size() == 5);

    // Envelope: set by the plugin, then stamped by the host.
    CHECK(r.meta("channel") == "test");
    CHECK(r.meta("external_id") == "mem-test-1");
    CHECK(r.meta("occurred_at") == "2025-01-06T09:00:00.000Z");
    CHECK(r.id() == "rec-000001");
    CHECK(r.meta("source") == "test");
    CHECK(r.meta("received_at") == sb::testing::rfc3339(Harness::kEpochMs));
    CHECK(r.meta("expires_at") == "2025-02-03T09:00:00.000Z");
    CHECK(contains(r.json(), R"("fields":{"citizen":{"name":"Test Person 1"})"));

    CHECK(h.emitted()[2].value("citizen.name") == "Test Person 3");
    CHECK(h.emitted()[2].meta("external_id") == "mem-test-3");
    CHECK(h.counter("records_emitted") == 3);
    CHECK(h.state().at("emitted") == "3");
    // Logs carry counts and ids only.
    CHECK_FALSE(h.logged("Test Person"));
    CHECK_FALSE(h.logged("@example.org"));
}

TEST_CASE("memory-source: defaults (10 records, 100ms apart, channel test, no hint)") {
    Harness h(module("memory-source"));
    h.instance_name("mem-a");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.poll() == SB_OK);
    CHECK(h.poll() == SB_IDLE); // not due yet
    h.advance(99);
    CHECK(h.poll() == SB_IDLE);
    h.advance(1);
    CHECK(h.poll() == SB_OK);
    for (int i = 0; i < 20; ++i) {
        h.advance(100);
        h.poll();
    }
    REQUIRE(h.emitted().size() == 10);
    CHECK(h.emitted()[0].meta("channel") == "test");
    CHECK(h.emitted()[0].meta("external_id") == "mem-mem-a-1");
    CHECK(h.emitted()[0].meta("source") == "mem-a");
    CHECK_FALSE(h.emitted()[0].has("hints.category"));
    CHECK(h.emitted()[1].meta("occurred_at") == "2025-01-06T09:00:00.100Z");
}

TEST_CASE("memory-source: a restart continues from the committed cursor") {
    Harness h(module("memory-source"));
    h.config("count", "5").config("interval", "\"0ms\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.poll() == SB_OK);
    CHECK(h.poll() == SB_OK);
    h.destroy();
    CHECK(h.state().at("emitted") == "2");

    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(drain(h) == 3);
    REQUIRE(h.emitted().size() == 5);
    for (std::size_t i = 0; i < 5; ++i)
        CHECK(h.emitted()[i].field("ref.sequence")->i == static_cast<std::int64_t>(i + 1));
    CHECK(h.counter("records_duplicate") == 0);
    CHECK(h.state().at("emitted") == "5");
}

TEST_CASE("memory-source: a lost cursor re-emits, and the journal answers duplicate") {
    Harness h(module("memory-source"));
    h.config("count", "2").config("interval", "\"0ms\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(drain(h) == 2);
    h.destroy();
    h.state().clear();
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(drain(h) == 2);
    CHECK(h.emitted().size() == 2);
    CHECK(h.counter("records_duplicate") == 2);
}

TEST_CASE("memory-source: a seeded or corrupt cursor") {
    Harness h(module("memory-source"));
    h.config("count", "4").config("interval", "\"0ms\"");
    h.state()["emitted"] = "3";
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(drain(h) == 1);
    REQUIRE(h.emitted().size() == 1);
    CHECK(h.emitted()[0].value("citizen.name") == "Test Person 4");
    h.destroy();

    h.state()["emitted"] = "three";
    CHECK(h.create() == SB_ERR_INTERNAL);
    CHECK(h.last_error() == "stored cursor 'emitted' is not a count");
}

TEST_CASE("memory-source: nothing is committed while the journal is unavailable") {
    Harness h(module("memory-source"));
    h.config("count", "1").config("interval", "\"0ms\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    h.journal_available(false);
    CHECK(h.poll() == SB_ERR_UNAVAILABLE);
    CHECK(h.emitted().empty());
    CHECK(h.state().count("emitted") == 0);
    CHECK(h.counter("emit_unavailable") == 1);
    h.journal_available(true);
    CHECK(h.poll() == SB_OK);
    REQUIRE(h.emitted().size() == 1);
    CHECK(h.emitted()[0].value("citizen.name") == "Test Person 1");
}

TEST_CASE("memory-source: the HTTP hook turns lines into one record") {
    Harness h(module("memory-source"));
    h.config("channel", "\"web_chat\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.routes() == std::vector<std::string>{"POST /hooks/memory/test"});

    auto reply = h.http("POST", "/hooks/memory/test",
                        "citizen.name\tidentity.name\tJane Doe\r\n"
                        "content.text\tcontent.free_text\tMy bin was missed\n"
                        "\n"
                        "extra.note\t\tno category\n");
    CHECK(reply.status == 202);
    CHECK(reply.body == R"({"status":"ok"})");
    CHECK(reply.content_type == "application/json");
    REQUIRE(h.emitted().size() == 1);
    const auto& r = h.emitted()[0];
    CHECK(r.value("citizen.name") == "Jane Doe");
    CHECK(r.category("citizen.name") == "identity.name");
    CHECK(r.value("content.text") == "My bin was missed");
    CHECK(r.category("extra.note") == "unknown");
    CHECK(r.meta("channel") == "web_chat");
    CHECK_FALSE(r.meta("external_id"));

    // An idempotency key becomes the external id, so a resend is a duplicate.
    std::vector<std::pair<std::string, std::string>> key{{"idempotency-key", "msg-42"}};
    CHECK(h.http("POST", "/hooks/memory/test", "a\tb\tc", key).status == 202);
    reply = h.http("POST", "/hooks/memory/test", "a\tb\tc", key);
    CHECK(reply.status == 202);
    CHECK(reply.body == R"({"status":"duplicate"})");
    CHECK(h.emitted().size() == 2);
    CHECK(h.emitted()[1].meta("external_id") == "msg-42");
    CHECK(h.counter("http_records") == 2);
    CHECK(h.counter("http_duplicate") == 1);
    CHECK_FALSE(h.logged("Jane Doe"));
}

TEST_CASE("memory-source: malformed hook bodies get 400 with a reason, never an echo") {
    Harness h(module("memory-source"));
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    auto reply = h.http("POST", "/hooks/memory/test",
                        "citizen.name\tidentity.name\tJane Doe\nJohn Smith lives here\n");
    CHECK(reply.status == 400);
    CHECK(reply.body == R"({"error":"line 2: expected path<TAB>category<TAB>value"})");
    CHECK_FALSE(contains(reply.body, "John"));

    reply = h.http("POST", "/hooks/memory/test", "a\tb\tc\td\n");
    CHECK(reply.body == R"({"error":"line 1: expected path<TAB>category<TAB>value"})");
    reply = h.http("POST", "/hooks/memory/test", "bad..path\tidentity.name\tJohn\n");
    CHECK(reply.status == 400);
    CHECK(reply.body == R"({"error":"line 1: invalid field path"})");
    reply = h.http("POST", "/hooks/memory/test", "a\tNot A Category\tJohn\n");
    CHECK(reply.body == R"({"error":"line 1: invalid category"})");
    reply = h.http("POST", "/hooks/memory/test", "\n\n");
    CHECK(reply.status == 400);
    CHECK(reply.body == R"({"error":"no fields in body"})");
    reply = h.http("POST", "/hooks/memory/test", "a\tb\tc", {{"Idempotency-Key", "has space"}});
    CHECK(reply.body == R"({"error":"invalid Idempotency-Key"})");

    CHECK(h.emitted().empty());
    CHECK(h.counter("http_rejected") == 6);
    CHECK_FALSE(h.logged("John"));
}

TEST_CASE("memory-source: routes match exactly or below a '/', and go at stop") {
    Harness h(module("memory-source"));
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.http("GET", "/hooks/memory/test").status == 404);             // method
    CHECK(h.http("POST", "/hooks/memory/testing", "a\tb\tc").status == 404); // not below '/'
    CHECK(h.http("POST", "/hooks/memory/test/x?y=1", "a\tb\tc").status == 202);
    CHECK(h.stop() == SB_OK);
    CHECK(h.http("POST", "/hooks/memory/test", "a\tb\tc").status == 404);
}

TEST_CASE("memory-source: the erase hook acknowledges and counts") {
    Harness h(module("memory-source"));
    h.config("count", "1").config("interval", "\"0ms\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    REQUIRE(h.poll() == SB_OK);
    CHECK(h.erase(h.emitted()[0], SB_ERASE_REQUEST) == SB_OK);
    CHECK(h.erase("rec-unknown") == SB_OK);
    CHECK(h.counter("erase_requests") == 2);
    CHECK(h.logged("erase requested for record rec-000001 (subject request)"));
    CHECK_FALSE(h.logged("Test Person"));
}

// ---------------------------------------------------------------------------
// memory-sink

TEST_CASE("memory-sink: delivers, keeps, and lists what it holds") {
    Harness h(module("memory-sink"));
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    auto rec = h.record().set("case.ref", "C-1", "reference.internal").meta("id", "rec-a");
    CHECK(h.deliver(rec, {"service_delivery", "revenues", 2}) == SB_OK);
    REQUIRE(h.deliveries().size() == 1);
    CHECK(h.deliveries()[0].sequence == 1);
    CHECK(h.deliveries()[0].attempt == 1);
    CHECK(h.deliveries()[0].record_id == "rec-a");

    // A repeat of a held record id is acknowledged, not held twice.
    CHECK(h.deliver(rec) == SB_OK);
    CHECK(h.counter("deliveries_repeated") == 1);
    CHECK(h.deliver(h.record().set("x", 1)) == SB_OK);

    auto reply = h.http("GET", "/plugins/memory-sink/test/records");
    CHECK(reply.status == 200);
    CHECK(contains(reply.body, R"([{"seq":1,"record_id":"rec-a","purpose":"service_delivery",)"
                               R"("profile":"revenues","record":{"id":"rec-a",)"));
    CHECK(contains(reply.body, R"("fields":{"case":{"ref":"C-1"}})"));
    CHECK(contains(reply.body, R"(},{"seq":2,"record_id":"rec-000001")"));
    CHECK(h.counter("delivered") == 2);
    CHECK(h.gauges().at("records_held") == 2);
}

TEST_CASE("memory-sink: mode and fail_first choose the answer") {
    auto rec = Harness::record().set("a", "b").meta("id", "rec-r");
    {
        Harness h(module("memory-sink"));
        h.config("mode", "\"transient\"");
        REQUIRE(h.create() == SB_OK);
        REQUIRE(h.start() == SB_OK);
        CHECK(h.deliver(rec) == SB_ERR_TRANSIENT);
        CHECK(h.logged("deliver returned transient"));
    }
    {
        Harness h(module("memory-sink"));
        h.config("mode", "\"permanent\"");
        REQUIRE(h.create() == SB_OK);
        REQUIRE(h.start() == SB_OK);
        CHECK(h.deliver(rec) == SB_ERR_PERMANENT);
        CHECK(h.http("GET", "/plugins/memory-sink/test/records").body == "[]");
    }
    {
        // It declares json-records: a plugin that reads fields all the same
        // fails its test here, as the daemon fails such a delivery.
        Harness h(module("memory-sink"));
        h.config("mode", "\"read-fields\"");
        REQUIRE(h.create() == SB_OK);
        REQUIRE(h.start() == SB_OK);
        CHECK_THROWS_WITH(h.deliver(rec),
                          Catch::Contains("declares SB_CAP_JSON_RECORDS but read the record's fields"));
    }
    {
        Harness h(module("memory-sink"));
        h.config("mode", "\"maybe\"");
        CHECK_THROWS_WITH(h.create(), Catch::Contains("'mode'") &&
                                          Catch::Contains("one of: ok, transient, permanent"));
    }
    Harness h(module("memory-sink"));
    h.config("fail_first", "2");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.deliver(rec) == SB_ERR_TRANSIENT);
    CHECK(h.deliver(rec) == SB_ERR_TRANSIENT);
    CHECK(h.deliver(rec) == SB_OK);
    // Retries of one record keep its sequence and count attempts.
    REQUIRE(h.deliveries().size() == 3);
    for (std::uint32_t i = 0; i < 3; ++i) {
        CHECK(h.deliveries()[i].sequence == 1);
        CHECK(h.deliveries()[i].attempt == i + 1);
    }
    CHECK(h.deliveries()[2].status == SB_OK);
    CHECK(h.counter("deliveries_transient") == 2);
}

TEST_CASE("memory-sink: output lines, flush, and erase rewriting the file") {
    Harness h(module("memory-sink"));
    fs::path out = h.data_dir() / "deliveries.jsonl";
    h.config("output", toml_string(out.string()));
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    for (const char* id : {"rec-a", "rec-b"})
        REQUIRE(h.deliver(h.record().set("who", "Jane Doe", "identity.name").meta("id", id)) == SB_OK);
    CHECK(h.flush() == SB_OK);
    auto lines = lines_of(out);
    REQUIRE(lines.size() == 2);
    CHECK(lines[0] == R"({"seq":1,"record_id":"rec-a","purpose":"testing","profile":"test",)"
                      R"("record":{"id":"rec-a","meta":{},"fields":{"who":"Jane Doe"},"attachments":[]}})");
    CHECK(contains(lines[1], R"({"seq":2,"record_id":"rec-b",)"));

    // Lines written by an earlier instance survive an erase of another record.
    h.destroy();
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    REQUIRE(h.deliver(h.record().set("who", "x").meta("id", "rec-c")) == SB_OK);
    CHECK(h.erase("rec-a") == SB_OK);
    lines = lines_of(out);
    REQUIRE(lines.size() == 2);
    CHECK(contains(lines[0], R"("record_id":"rec-b")"));
    CHECK(contains(lines[1], R"("record_id":"rec-c")"));
    CHECK_FALSE(fs::exists(out.string() + ".tmp"));

    // Erase drops it from memory too; the file keeps taking appends.
    CHECK(h.erase("rec-c") == SB_OK);
    CHECK(h.http("GET", "/plugins/memory-sink/test/records").body == "[]");
    REQUIRE(h.deliver(h.record().set("who", "y").meta("id", "rec-d")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    lines = lines_of(out);
    REQUIRE(lines.size() == 2);
    CHECK(contains(lines[1], R"("record_id":"rec-d")"));
    CHECK(h.erase("rec-never") == SB_OK);
    CHECK(h.counter("erased") == 3);
    CHECK_FALSE(h.logged("Jane Doe"));
}

TEST_CASE("memory-sink: an output file that cannot be opened fails create clearly") {
    Harness h(module("memory-sink"));
    h.config("output", "\"/nonexistent/dir/out.jsonl\"");
    CHECK(h.create() == SB_ERR_INVALID);
    CHECK(contains(h.last_error(), "cannot open output file /nonexistent/dir/out.jsonl"));
}

TEST_CASE("memory-source records delivered to memory-sink") {
    Harness source(module("memory-source"));
    source.config("count", "2").config("interval", "\"0ms\"");
    REQUIRE(source.create() == SB_OK);
    REQUIRE(source.start() == SB_OK);
    drain(source);
    Harness sink(module("memory-sink"));
    REQUIRE(sink.create() == SB_OK);
    REQUIRE(sink.start() == SB_OK);
    for (const auto& r : source.emitted()) CHECK(sink.deliver(r) == SB_OK);
    auto body = sink.http("GET", "/plugins/memory-sink/test/records").body;
    CHECK(contains(body, R"("record_id":"rec-000002")"));
    CHECK(contains(body, R"("name":"Test Person 2")"));
}

// ---------------------------------------------------------------------------
// Timers and misuse

TEST_CASE("timers fire in advance(), in order, on the fake clock") {
    Ticker::ticks.clear();
    Ticker::once = Ticker::selfish = 0;
    Harness h(sb::detail::descriptor<Ticker>());
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.active_timers() == 3);
    h.advance(199);
    CHECK(Ticker::once == 0);
    h.advance(1);
    CHECK(Ticker::once == 1);
    CHECK(Ticker::selfish == 2);
    h.advance(800);
    CHECK(Ticker::ticks == std::vector<std::int64_t>{Harness::kEpochMs + 1000});
    CHECK(Ticker::selfish == 3); // cancelled itself
    h.advance(1000);
    CHECK(Ticker::ticks == std::vector<std::int64_t>{Harness::kEpochMs + 1000,
                                                     Harness::kEpochMs + 1500,
                                                     Harness::kEpochMs + 2000});
    CHECK(h.now_ms() == Harness::kEpochMs + 2000);
    CHECK(Ticker::once == 1);
    CHECK(Ticker::selfish == 3);
    CHECK(h.active_timers() == 1);
    REQUIRE(h.emitted().size() == 3);
    CHECK(h.emitted()[2].value("tick") == "3");
    CHECK(h.emitted()[2].meta("received_at") == "2025-01-06T09:00:02.000Z");

    CHECK(h.stop() == SB_OK);
    CHECK(h.active_timers() == 0);
    h.advance(10'000);
    CHECK(Ticker::ticks.size() == 3);
    CHECK_THROWS_AS(h.advance(-1), std::invalid_argument);
}

TEST_CASE("the harness refuses what the daemon refuses, with a reason") {
    Harness h(sb::detail::descriptor<Careless>());
    REQUIRE(h.create() == SB_OK);
    CHECK(h.start() == SB_ERR_INTERNAL);
    CHECK(h.last_error() == "could not start timer");
    CHECK(h.logged("harness: timer_start: the descriptor lacks SB_CAP_TIMERS"));
    h.destroy();

    h.config("route_in_create", "true");
    CHECK(h.create() == SB_ERR_INVALID);
    CHECK(h.logged("routes may be registered only in start"));
    CHECK_THROWS_AS(h.poll(), std::logic_error);
}
