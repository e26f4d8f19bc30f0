// The plugin ABI: struct layouts are pinned, and the host refuses every kind
// of incompatible plugin with one line naming the file, what it expected and
// what it found.

#include "plugin/instance.hpp"
#include "plugin/library.hpp"
#include "plugin/registry.hpp"
#include "util/sha256.hpp"

#include <switchboard/plugin.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;
using namespace switchboard;

namespace {

fs::path plugin_dir() {
    const char* d = std::getenv("SB_ABI_PLUGIN_DIR");
    REQUIRE(d != nullptr);
    return d;
}

fs::path plugin_file(const std::string& name) { return plugin_dir() / (name + ".so"); }

// A directory holding copies of exactly the plugins a test wants.
struct PluginDir {
    fs::path path;
    explicit PluginDir(std::initializer_list<std::string> names) {
        char tmpl[] = "/tmp/sb-abi-XXXXXX";
        path = mkdtemp(tmpl);
        for (const auto& n : names) fs::copy_file(plugin_file(n), path / (n + ".so"));
    }
    ~PluginDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

std::string refusal_of(const std::string& name, const plugin::LoadOptions& options = {}) {
    plugin::Refusal r;
    auto p = plugin::load_plugin(plugin_file(name), options, r);
    REQUIRE(p == nullptr);
    return r.str();
}

bool mapped(const fs::path& file) {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    std::string want = fs::canonical(file).string();
    while (std::getline(maps, line))
        if (line.find(want) != std::string::npos) return true;
    return false;
}

// Takes what a source emits, for the C plugin test.
struct CaptureSink : plugin::NoJournal {
    std::vector<std::string> json;
    std::vector<const sb_record*> seen;
    std::vector<std::string> cursors;
    int fail_next = 0; // the next emits not committed
    sb_status emit(const std::string&, std::vector<std::unique_ptr<sb_record>>& records,
                   const char*, const char* state_value, sb_status* results, std::string& error) override {
        if (fail_next > 0) {
            --fail_next;
            error = "injected";
            return SB_ERR_UNAVAILABLE;
        }
        if (state_value) cursors.emplace_back(state_value);
        for (std::size_t i = 0; i < records.size(); ++i) {
            json.push_back(records[i]->data.json());
            seen.push_back(records[i].get());
            if (results) results[i] = SB_OK;
        }
        return SB_OK;
    }
};

// Services for one instance whose emitted records are captured, and its
// metrics counted.
struct Captured {
    CaptureSink sink;
    plugin::Metrics metrics;
    plugin::Services services;
    Captured() {
        services.metrics = &metrics;
        services.sink = &sink;
    }
    Captured(const Captured&) = delete; // (services points into it)
    Captured& operator=(const Captured&) = delete;
};

// An instance `ic` of the plugin `ic.plugin` in `dir`. The registry that
// found it is gone when this returns: the instance holds its library.
std::unique_ptr<plugin::Instance> instance_of(const PluginDir& dir, const config::InstanceConfig& ic,
                                              plugin::Services& services) {
    plugin::Registry registry;
    registry.scan({dir.path}, {});
    auto p = registry.find(ic.plugin);
    REQUIRE(p);
    return std::make_unique<plugin::Instance>(p, ic, services);
}

} // namespace

TEST_CASE("public structs keep their published size and layout (x86_64, ABI 1.4)") {
    // Changing any of these is an ABI break: append fields (minor bump) or
    // bump the major. See docs/sdk.md.
    STATIC_REQUIRE(SB_ABI_MAJOR == SB_MESON_ABI_MAJOR);
    STATIC_REQUIRE(SB_ABI_MAJOR == 1);
    STATIC_REQUIRE(SB_ABI_MINOR == 4);
    STATIC_REQUIRE(SB_CAP_JSON_RECORDS == (uint64_t{1} << 6)); // ABI 1.4
    STATIC_REQUIRE(sizeof(sb_plugin_descriptor) == 160);
    STATIC_REQUIRE(offsetof(sb_plugin_descriptor, struct_size) == 0);
    STATIC_REQUIRE(offsetof(sb_plugin_descriptor, abi_major) == 4);
    STATIC_REQUIRE(offsetof(sb_plugin_descriptor, abi_minor) == 6);
    STATIC_REQUIRE(offsetof(sb_plugin_descriptor, name) == 8);
    STATIC_REQUIRE(offsetof(sb_plugin_descriptor, create) == 88);
    STATIC_REQUIRE(offsetof(sb_plugin_descriptor, transform) == 152);
    STATIC_REQUIRE(sizeof(sb_host_api) == 400);
    STATIC_REQUIRE(offsetof(sb_host_api, set_error) == 8);
    STATIC_REQUIRE(offsetof(sb_host_api, emit) == 216);
    STATIC_REQUIRE(offsetof(sb_host_api, timer_cancel) == 344);
    STATIC_REQUIRE(offsetof(sb_host_api, audit) == 352); // ABI 1.1
    STATIC_REQUIRE(offsetof(sb_host_api, shape_new) == 360); // ABI 1.2
    STATIC_REQUIRE(offsetof(sb_host_api, record_set_shape) == 376);
    STATIC_REQUIRE(offsetof(sb_host_api, emit_begin) == 384); // ABI 1.3
    STATIC_REQUIRE(offsetof(sb_host_api, emit_wait) == 392);
    STATIC_REQUIRE(sizeof(sb_config_field) == 64);
    STATIC_REQUIRE(sizeof(sb_delivery) == 64);
    STATIC_REQUIRE(sizeof(sb_erase_request) == 48);
    STATIC_REQUIRE(sizeof(sb_value) == 40);
    STATIC_REQUIRE(sizeof(sb_field) == 64);
    STATIC_REQUIRE(sizeof(sb_attachment) == 56);
    REQUIRE(sb::detail::descriptor_size_for_minor(0) == 160);
    REQUIRE(sb::detail::descriptor_size_for_minor(1) == 160);
    REQUIRE(sb::detail::descriptor_size_for_minor(2) == 160);
    REQUIRE(sb::detail::descriptor_size_for_minor(3) == 160);
}

TEST_CASE("a plugin built for another ABI major is refused, naming file, expected and found") {
    std::string msg = refusal_of("bad-major");
    CHECK(msg == "plugin " + plugin_file("bad-major").string() +
                     ": refused: expected plugin ABI major 1, found 2 (rebuild the plugin against "
                     "this SDK)");
}

TEST_CASE("a plugin built for a newer minor is refused") {
    CHECK(refusal_of("newer-minor") ==
          "plugin " + plugin_file("newer-minor").string() +
              ": refused: expected plugin ABI minor 4 or older, found 5 (the plugin needs a newer "
              "Switchboard)");
}

TEST_CASE("a descriptor smaller than the one the host knows is refused") {
    CHECK(refusal_of("small-descriptor") ==
          "plugin " + plugin_file("small-descriptor").string() +
              ": refused: expected a descriptor of at least 160 bytes for ABI 1.4, found 64 bytes");
}

TEST_CASE("a library without the entry point is refused") {
    CHECK(refusal_of("no-entry") ==
          "plugin " + plugin_file("no-entry").string() +
              ": refused: expected entry point switchboard_plugin_descriptor, found none (not a "
              "Switchboard plugin)");
}

TEST_CASE("a second plugin with the same name is refused; the first stays") {
    PluginDir dir({"duplicate-a", "duplicate-b"});
    plugin::Registry registry;
    registry.scan({dir.path}, {});
    REQUIRE(registry.plugins().size() == 1);
    CHECK(registry.plugins()[0]->file == dir.path / "duplicate-a.so");
    REQUIRE(registry.refused().size() == 1);
    CHECK(registry.refused()[0].str() ==
          "plugin " + (dir.path / "duplicate-b.so").string() +
              ": refused: expected a unique plugin name, found 'duplicate' already loaded from " +
              (dir.path / "duplicate-a.so").string());
}

TEST_CASE("a pinned plugin whose hash differs is refused before any of its code runs") {
    PluginDir dir({"constructor-marker"});
    fs::path marker = dir.path / "marker";
    setenv("SB_CTOR_MARKER", marker.c_str(), 1);

    std::string error;
    auto actual = sha256_file(dir.path / "constructor-marker.so", error);
    REQUIRE(actual);
    std::string wrong(64, '0');

    plugin::Registry refused;
    refused.scan({dir.path}, {{{"constructor-marker.so", wrong}}, false});
    CHECK(refused.plugins().empty());
    REQUIRE(refused.refused().size() == 1);
    CHECK(refused.refused()[0].reason == "expected sha256 " + wrong + ", found " + *actual);
    // The library's constructor would have written the marker.
    CHECK_FALSE(fs::exists(marker));

    // The same file with the right pin loads, and its constructor does run:
    // so the check above could have failed.
    plugin::Registry accepted;
    accepted.scan({dir.path}, {{{"constructor-marker.so", *actual}}, false});
    REQUIRE(accepted.plugins().size() == 1);
    CHECK(accepted.plugins()[0]->sha256 == *actual);
    CHECK(fs::exists(marker));
    unsetenv("SB_CTOR_MARKER");
}

TEST_CASE("require_pins refuses an unpinned plugin") {
    PluginDir dir({"c-source"});
    plugin::Registry registry;
    registry.scan({dir.path}, {{}, true});
    CHECK(registry.plugins().empty());
    REQUIRE(registry.refused().size() == 1);
    CHECK(registry.refused()[0].reason ==
          "expected a sha256 pin (plugins.require_pins is set), found none");
}

TEST_CASE("a missing plugin directory is reported, not fatal") {
    plugin::Registry registry;
    registry.scan({"/nonexistent/switchboard/plugins", plugin_dir()}, {});
    CHECK(registry.find("c-source") != nullptr);
    REQUIRE_FALSE(registry.refused().empty());
    CHECK(registry.refused()[0].str() ==
          "plugin directory /nonexistent/switchboard/plugins: does not exist or is not a directory");
}

TEST_CASE("a plain C plugin runs through the host table, and its library stays loaded while "
          "its instance lives") {
    PluginDir dir({"c-source"});
    fs::path file = dir.path / "c-source.so";
    Captured host;
    auto& sink = host.sink;
    auto& metrics = host.metrics;

    config::InstanceConfig ic;
    ic.name = "greeter";
    ic.plugin = "c-source";
    config::PluginValue greeting;
    greeting.text = "hello from C";
    ic.values["greeting"] = greeting;

    std::unique_ptr<plugin::Instance> instance = instance_of(dir, ic, host.services);
    // The registry is gone; the instance still holds the library.
    CHECK(mapped(file));
    std::string error;
    REQUIRE(instance->create(error));
    REQUIRE(instance->start(error));
    CHECK(instance->poll_once(error) == SB_OK);
    REQUIRE(sink.json.size() == 1);
    CHECK(sink.json[0].find("\"content\":{\"text\":\"hello from C\"}") != std::string::npos);
    CHECK(metrics.value("greeter", "polls") == 1);
    // The emitted record is recycled for the source's next one (the same
    // object, on the same thread), and that one is a record like the first.
    CHECK(instance->poll_once(error) == SB_OK);
    REQUIRE(sink.json.size() == 2);
    CHECK(sink.seen[1] == sink.seen[0]);
    CHECK(sink.json[1] == sink.json[0]);
    instance->stop();
    instance->destroy();
    instance.reset();
    // Last reference gone: now it may be unmapped.
    CHECK_FALSE(mapped(file));
}

TEST_CASE("recycled records come back empty, at most a batch's worth are kept, whichever thread gives them back") {
    plugin::RecordPool pool;
    std::vector<std::unique_ptr<sb_record>> made;
    std::vector<const sb_record*> first;
    for (int k = 0; k < 5000; ++k) {
        made.push_back(pool.take());
        sb_value v{SB_VALUE_STRING, "a value of some length, kept", 28, 0, 0};
        REQUIRE(made.back()->data.set("citizen.name", v, "identity.name") == SB_OK);
        REQUIRE(made.back()->data.set_meta("channel", "phone") == SB_OK);
        first.push_back(made.back().get());
    }
    made.push_back(nullptr); // (a sink may keep a record: nothing to give back)
    // Made on this thread, given back on another (a source that emits on a
    // thread of its own), taken again here.
    std::thread([&] { pool.give_back(made); }).join();
    CHECK(made.empty());
    const std::string empty = sb_record{}.data.json();
    std::size_t reused = 0;
    for (int k = 0; k < 5000; ++k) {
        made.push_back(pool.take());
        const sb_record* r = made.back().get();
        CHECK(r->data.json() == empty);
        CHECK(r->data.meta("channel") == nullptr);
        if (k < 4096 && std::find(first.begin(), first.end(), r) != first.end()) ++reused;
    }
    CHECK(reused == plugin::RecordPool::kKept); // the other 904 were freed: these are new ones
    CHECK(plugin::RecordPool::kKept == 4096);
}

TEST_CASE("emit ahead through the host table (ABI 1.3): a batch begun while an earlier one is not yet "
          "waited for commits only if that one does; each ticket is waited for once") {
    PluginDir dir({"c-ahead"});
    Captured host;
    auto& sink = host.sink;
    auto& metrics = host.metrics;
    config::InstanceConfig ic;
    ic.name = "ahead";
    ic.plugin = "c-ahead";
    auto owned = instance_of(dir, ic, host.services);
    plugin::Instance& instance = *owned;
    std::string error;
    REQUIRE(instance.create(error));
    REQUIRE(instance.start(error));
    auto count = [&](const std::string& name) { return metrics.value("ahead", name); };

    // Both commit, in order, with their cursors.
    REQUIRE(instance.poll_once(error) == SB_OK);
    CHECK(count("begin_a_ok") == 1);
    CHECK(count("begin_b_ok") == 1);
    CHECK(count("a_ok") == 1);
    CHECK(count("a_record_ok") == 1);
    CHECK(count("b_ok") == 1);
    CHECK(count("again_invalid") == 1); // waited for already
    CHECK(count("never_invalid") == 1);
    REQUIRE(sink.json.size() == 2);
    CHECK(sink.json[0].find("first") != std::string::npos);
    CHECK(sink.json[1].find("second") != std::string::npos);
    CHECK(sink.cursors == std::vector<std::string>{"a", "b"});

    // The first is not committed: neither is the second, which the sink
    // never sees.
    sink.fail_next = 1;
    REQUIRE(instance.poll_once(error) == SB_OK);
    CHECK(count("a_unavailable") == 1);
    CHECK(count("b_unavailable") == 1);
    CHECK(sink.json.size() == 2);
    CHECK(sink.fail_next == 0);

    // And the next poll's pair commits again.
    REQUIRE(instance.poll_once(error) == SB_OK);
    CHECK(count("a_ok") == 2);
    CHECK(count("b_ok") == 2);
    CHECK(sink.json.size() == 4);
    CHECK(sink.cursors == std::vector<std::string>{"a", "b", "a", "b"});
    instance.stop();
    instance.destroy();
}

TEST_CASE("a plugin built for ABI 1.0 still loads and runs on a 1.1 host") {
    PluginDir dir({"old-minor"});
    plugin::Registry registry;
    registry.scan({dir.path}, {});
    REQUIRE(registry.refused().empty());
    auto p = registry.find("old-minor");
    REQUIRE(p);
    CHECK(p->descriptor->abi_minor == 0);
    plugin::NoJournal sink;
    plugin::Services services;
    services.sink = &sink;
    config::InstanceConfig ic;
    ic.name = "old";
    ic.plugin = "old-minor";
    plugin::Instance instance(p, ic, services);
    std::string error;
    CHECK(instance.create(error));
    CHECK(instance.start(error));
    // The table it is handed is the host's, with the 1.1 function at the end.
    CHECK(instance.api()->struct_size == sizeof(sb_host_api));
    CHECK(instance.api()->audit != nullptr);
}

TEST_CASE("host->audit (ABI 1.1): checked, sanitised and written to the audit trail with the "
          "instance named") {
    PluginDir dir({"c-audit"});
    plugin::NoJournal sink;
    plugin::Metrics metrics;
    std::vector<plugin::AuditNote> notes;
    plugin::Services services;
    services.sink = &sink;
    services.metrics = &metrics;
    services.audit = [&](plugin::AuditNote n) {
        notes.push_back(std::move(n));
        return SB_OK;
    };
    config::InstanceConfig ic;
    ic.name = "gate";
    ic.plugin = "c-audit";
    auto owned = instance_of(dir, ic, services);
    plugin::Instance& instance = *owned;
    std::string error;
    REQUIRE(instance.create(error));
    REQUIRE(instance.start(error));
    CHECK(instance.poll_once(error) == SB_IDLE);
    CHECK(metrics.value("gate", "audit_ok") == 3);
    CHECK(metrics.value("gate", "audit_invalid") == 4);
    CHECK(metrics.value("gate", "audit_other") == 0);
    REQUIRE(notes.size() == 3);
    CHECK(notes[0].instance == "gate");
    CHECK(notes[0].plugin == "c-audit");
    CHECK(notes[0].event == "handshake_refused");
    CHECK(notes[0].record_id.empty());
    // One line: control characters became spaces.
    CHECK(notes[0].detail == "key=abc from tcp://127.0.0.1 forged=line  ");
    CHECK(notes[1].record_id == "R17-3");
    CHECK(notes[1].detail.size() == 256);
    CHECK(notes[1].detail.substr(253) == "...");
    CHECK(notes[2].detail.empty());

    // What the daemon does with them: entries of kind "plugin" in the
    // hash-chained files, which verify, each on one line.
    char tmpl[] = "/tmp/sb-abi-audit-XXXXXX";
    fs::path adir = mkdtemp(tmpl);
    {
        audit::AuditLog log(adir);
        for (const auto& n : notes) plugin::append_audit(log, 1'736'154'000'000, n);
        REQUIRE(log.sync().ok());
    }
    CHECK(audit::AuditLog::verify(adir).ok);
    std::vector<audit::Record> read;
    audit::AuditLog::scan(adir, [&](const audit::Record& r) {
        read.push_back(r);
        return true;
    });
    REQUIRE(read.size() == 3);
    CHECK(read[0].kind == "plugin");
    auto attrs = audit::parse_detail(read[0].detail);
    std::map<std::string, std::string> m(attrs.begin(), attrs.end());
    CHECK(m["instance"] == "gate");
    CHECK(m["plugin"] == "c-audit");
    CHECK(m["event"] == "handshake_refused");
    CHECK(m["detail"] == "key=abc from tcp://127.0.0.1 forged=line  ");
    CHECK(read[1].record_id == "R17-3");
    CHECK(audit::parse_detail(read[2].detail).size() == 3); // no detail attribute
    fs::remove_all(adir);

    // A node without an audit trail says so.
    services.audit = nullptr;
    CHECK(instance.poll_once(error) == SB_IDLE);
    CHECK(metrics.value("gate", "audit_other") == 3);
    CHECK(metrics.value("gate", "audit_invalid") == 8);
    instance.stop();
}
