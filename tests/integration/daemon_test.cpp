// The `switchboard` command as users run it: a real subprocess, real config
// files, real HTTP on loopback, real signals.

#include "process.hpp"

#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>

#include <catch2/catch.hpp>

#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using sbtest::Process;
using sbtest::TempDir;

namespace {

std::string default_config() { return sbtest::source_root() + "/configs/default.toml"; }

// The default config's department feeds.
const char* const kFeeds[] = {"revenues", "waste", "housing"};

// What `scripts/demo keys` makes under var/keys/, made under DIR instead
// (when missing), and the --set arguments pointing the default config's
// feeds at them, each on a free loopback port.
std::vector<std::string> demo_keys(const std::filesystem::path& dir) {
    std::filesystem::create_directories(dir);
    for (const char* name : {"switchboard", "revenues", "waste", "housing"}) {
        if (std::filesystem::exists(dir / (std::string(name) + ".key"))) continue;
        auto r = sbtest::run({sbtest::switchboard_binary(), "keygen", name, "--dir", dir.string()}, 20s);
        INFO(r.err);
        REQUIRE(r.code == 0);
    }
    std::vector<std::string> args;
    for (const char* dest : kFeeds) {
        const std::string at = std::string("destinations.") + dest + ".config.";
        args.insert(args.end(), {"--set", at + "endpoint=tcp://127.0.0.1:*",
                                 "--set", at + "server_secret_key=file:" + (dir / "switchboard.key").string(),
                                 "--set", at + "client_key_files=[\"" + (dir / dest).string() + ".pub\"]"});
    }
    return args;
}

struct Http {
    int status;
    std::string body;
};

Http get(int port, const std::string& path) {
    Poco::Net::HTTPClientSession session("127.0.0.1", static_cast<Poco::UInt16>(port));
    session.setTimeout(Poco::Timespan(5, 0));
    Poco::Net::HTTPRequest req(Poco::Net::HTTPRequest::HTTP_GET, path, Poco::Net::HTTPMessage::HTTP_1_1);
    session.sendRequest(req);
    Poco::Net::HTTPResponse resp;
    std::istream& in = session.receiveResponse(resp);
    std::ostringstream body;
    body << in.rdbuf();
    return {static_cast<int>(resp.getStatus()), body.str()};
}

// Starts the daemon on `config` with a private data dir and a free port. For
// the default config, the demo is laid out in the data dir too (as `make
// run` does under var/), with its feeds' keys, the feeds on free ports and
// the review file there: tests stay out of the source tree.
std::unique_ptr<Process> start(const std::string& config, const TempDir& data,
                               std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {sbtest::switchboard_binary(), "run", "-c", config,
                                     "--plugin-dir", sbtest::plugin_dir(),
                                     "--set", "http.listen=127.0.0.1:0",
                                     "--set", "node.data_dir=" + data.path.string()};
    if (config == default_config()) {
        auto demo = data.path / "demo";
        if (!std::filesystem::exists(demo)) {
            auto r = sbtest::run({"/usr/bin/env", "python3", sbtest::source_root() + "/scripts/demo",
                                  "prepare", "--root", demo.string()});
            REQUIRE(r.code == 0);
        }
        argv.insert(argv.end(), {"--set", "destinations.review.config.dir=" +
                                              (data.path / "departments" / "review").string()});
        auto keys = demo_keys(data.path / "keys");
        argv.insert(argv.end(), keys.begin(), keys.end());
        argv.insert(argv.end(), {"--set", "sources.calls.config.export_dir=" + (demo / "verint").string(),
                                 "--set", "sources.one-stop-shops.config.dir=" + (demo / "qgenie").string(),
                                 "--set", "sources.email.config.maildir=" + (demo / "email").string()});
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(argv, std::vector<std::string>{"LANDBOT_HOOK_TOKEN=test-hook-token"});
}

} // namespace

TEST_CASE("the daemon starts on configs/default.toml, reports ready, serves health, stops on SIGTERM") {
    TempDir data;
    auto daemon = start(default_config(), data);
    int port = sbtest::ready_port(*daemon);
    CHECK(get(port, "/healthz").status == 200);
    Http ready = get(port, "/readyz");
    CHECK(ready.status == 200);
    CHECK(ready.body == "{\"status\":\"ready\"}");
    CHECK(get(port, "/no/such/route").status == 404);
    // Each department watches its feed with switchboard-feed, as the README
    // tells a new user to, writing to departments/<name>.
    std::vector<std::unique_ptr<Process>> clients;
    for (const char* dest : kFeeds) {
        auto m = daemon->wait_for_log(std::string("\\[") + dest +
                                          "\\]: listening on (tcp://127\\.0\\.0\\.1:[0-9]+) \\(CURVE",
                                      20s);
        INFO(daemon->err());
        REQUIRE(m);
        const auto keys = data.path / "keys";
        clients.push_back(std::make_unique<Process>(std::vector<std::string>{
            sbtest::env_or_fail("SB_FEED_BINARY"), "--endpoint", (*m)[1], "--server-key",
            (keys / "switchboard.pub").string(), "--key", (keys / dest).string() + ".key", "--state",
            (data.path / "feed-state" / dest).string(), "--out", (data.path / "departments" / dest).string()}));
    }
    // The demo contacts flow to the demo departments within seconds, from
    // every source: a Landbot conversation once it has been quiet for 5s.
    {
        std::ifstream in(sbtest::source_root() + "/configs/sample/landbot/platform_web_text_customer.json");
        std::string body((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        // The sample is from January 2025: make it a chat from just now, or
        // it is already past its retention period.
        auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
        body = std::regex_replace(body, std::regex("1736154061\\.482913"), std::to_string(now_s) + ".5");
        Poco::Net::HTTPClientSession session("127.0.0.1", static_cast<Poco::UInt16>(port));
        Poco::Net::HTTPRequest req(Poco::Net::HTTPRequest::HTTP_POST, "/hooks/landbot/web-chat",
                                   Poco::Net::HTTPMessage::HTTP_1_1);
        req.set("Authorization", "Token test-hook-token");
        req.setContentType("application/json");
        req.setContentLength(static_cast<std::streamsize>(body.size()));
        session.sendRequest(req) << body;
        Poco::Net::HTTPResponse resp;
        session.receiveResponse(resp);
        CHECK(resp.getStatus() == 200);
    }
    std::set<std::string> sources_seen;
    auto deadline = std::chrono::steady_clock::now() + 30s;
    auto delivered = [&] {
        std::size_t n = 0;
        for (const char* dest : {"revenues", "waste", "housing", "review"}) {
            std::error_code ec;
            for (auto it = std::filesystem::directory_iterator(data.path / "departments" / dest, ec);
                 !ec && it != std::filesystem::directory_iterator(); ++it) {
                std::ifstream in(it->path());
                for (std::string l; std::getline(in, l);) {
                    if (l.empty()) continue;
                    ++n;
                    auto at = l.find("\"source\":\"");
                    if (at != std::string::npos)
                        sources_seen.insert(l.substr(at + 10, l.find('"', at + 10) - at - 10));
                }
            }
        }
        return n;
    };
    for (;;) {
        std::size_t n = delivered();
        if ((sources_seen.size() == 5 && n >= 18) || std::chrono::steady_clock::now() > deadline) break;
        daemon->pump(0);
        for (auto& c : clients) c->pump(0);
        std::this_thread::sleep_for(100ms);
    }
    CHECK(sources_seen == std::set<std::string>{"calls", "email", "one-stop-shops", "sample-import", "web-chat"});
    CHECK(delivered() >= 18);
    // Every feed had records, and each client stops cleanly.
    for (const char* dest : kFeeds) {
        std::error_code ec;
        CHECK_FALSE(std::filesystem::is_empty(data.path / "departments" / dest, ec));
    }
    for (auto& c : clients) {
        c->signal(SIGTERM);
        INFO(c->err());
        CHECK(c->wait(20s) == 0);
    }
    // SIGHUP says plainly what it does.
    daemon->signal(SIGHUP);
    CHECK(daemon->wait_for_log("SIGHUP: .* is valid, but live reload is not supported yet", 10s));

    daemon->signal(SIGTERM);
    auto code = daemon->wait(15s);
    REQUIRE(code);
    CHECK(*code == 0);
    CHECK(daemon->err().find("INFO  core: stopping on SIGTERM") != std::string::npos);
    CHECK(daemon->err().find("INFO  core: stopped") != std::string::npos);
}

TEST_CASE("SIGINT stops the daemon cleanly too") {
    TempDir data;
    auto daemon = start(default_config(), data);
    sbtest::ready_port(*daemon);
    daemon->signal(SIGINT);
    auto code = daemon->wait(15s);
    REQUIRE(code);
    CHECK(*code == 0);
}

TEST_CASE("[node] prepare_helpers sets the journal's helper threads; unset, the machine's CPUs decide") {
    TempDir data, dir;
    auto config = dir.write("plain.toml", "[node]\ndata_dir = \"d\"\n");
    {
        auto daemon = start(config.string(), data, {"--set", "node.prepare_helpers=2"});
        sbtest::ready_port(*daemon);
        CHECK(daemon->wait_for_log("ready: .*, prepare helpers 2\n", 5s));
        daemon->signal(SIGTERM);
        CHECK(daemon->wait(15s) == 0);
    }
    TempDir data2;
    auto daemon = start(config.string(), data2);
    sbtest::ready_port(*daemon);
    const unsigned cpus = std::thread::hardware_concurrency();
    CHECK(daemon->wait_for_log("ready: .*, prepare helpers " + std::string(cpus > 2 ? "1" : "0") + "\n", 5s));
    daemon->signal(SIGTERM);
    CHECK(daemon->wait(15s) == 0);
}

TEST_CASE("a second daemon on the same data directory refuses to start") {
    TempDir data;
    auto first = start(default_config(), data);
    sbtest::ready_port(*first);
    auto second = start(default_config(), data);
    auto code = second->wait(15s);
    REQUIRE(code);
    CHECK(*code == 1);
    CHECK(second->err().find("another switchboard process is using " + data.path.string()) !=
          std::string::npos);
    first->signal(SIGTERM);
    CHECK(first->wait(15s) == 0);
}

TEST_CASE("run refuses an invalid config, listing every error, and starts nothing") {
    TempDir dir;
    auto config = dir.write("bad.toml", "[node]\ndata_dir = \"d\"\nbogus = 1\n[http]\nthreads = 0\n");
    auto r = sbtest::run({sbtest::switchboard_binary(), "run", "-c", config.string(),
                          "--plugin-dir", sbtest::plugin_dir()});
    CHECK(r.code == 2);
    CHECK(r.err.find(config.string() + ":3:1: node.bogus: unknown key; valid keys: name, data_dir, "
                                       "store, prepare_helpers, postgresql") != std::string::npos);
    CHECK(r.err.find(config.string() + ":5:11: http.threads: must be at least 1 (found 0)") !=
          std::string::npos);
    CHECK(r.err.find("2 error(s); not starting") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir.path / "d"));
}

TEST_CASE("check: exit 0 on a valid config, 2 with every error on a bad one") {
    // The default config reads its feeds' keys from var/keys/, which
    // `make run` makes first (scripts/demo keys); here they are made under a
    // temporary directory instead.
    TempDir keys;
    std::vector<std::string> argv = {sbtest::switchboard_binary(), "check", "-c", default_config(),
                                     "--plugin-dir", sbtest::plugin_dir()};
    auto key_args = demo_keys(keys.path);
    argv.insert(argv.end(), key_args.begin(), key_args.end());
    auto ok = sbtest::run(argv, 60s, {"LANDBOT_HOOK_TOKEN=test-hook-token"});
    CHECK(ok.code == 0);
    CHECK(ok.out.find("default.toml: OK") != std::string::npos);

    TempDir dir;
    auto config = dir.write("bad.toml", "[node]\ndata_dir = \"d\"\n[sources.web]\nplugin = "
                                        "\"memory-source\"\n[sources.web.config]\ncount = -1\n"
                                        "colour = \"blue\"\n");
    auto bad = sbtest::run({sbtest::switchboard_binary(), "check", "-c", config.string(),
                            "--plugin-dir", sbtest::plugin_dir()});
    CHECK(bad.code == 2);
    CHECK(bad.err.find(config.string() + ":6:9: sources.web.config.count: must be at least 0 (found -1)") !=
          std::string::npos);
    CHECK(bad.err.find(config.string() + ":7:1: sources.web.config.colour: unknown key") !=
          std::string::npos);
    CHECK(bad.err.find("2 error(s)") != std::string::npos);
}

TEST_CASE("a plugin that throws in create stops start-up with its message, not a crash") {
    TempDir data, dir;
    auto config = dir.write("throws.toml", "[node]\ndata_dir = \"d\"\n[sources.broken]\nplugin = "
                                           "\"memory-source\"\n[sources.broken.config]\n"
                                           "throw_in_create = true\n");
    auto daemon = start(config.string(), data);
    auto code = daemon->wait(20s);
    REQUIRE(code);
    CHECK(*code == 1);
    CHECK(daemon->err().find("ERROR host: sources.broken (plugin memory-source): create failed:") !=
          std::string::npos);
}

TEST_CASE("a plugin whose start fails with sb::Error stops start-up with its status message") {
    TempDir data, dir;
    auto config = dir.write("fails.toml", "[node]\ndata_dir = \"d\"\n[sources.broken]\nplugin = "
                                          "\"memory-source\"\n[sources.broken.config]\n"
                                          "fail_start = true\n");
    auto daemon = start(config.string(), data);
    auto code = daemon->wait(20s);
    REQUIRE(code);
    CHECK(*code == 1);
    CHECK(daemon->err().find("ERROR host: sources.broken (plugin memory-source): start failed: "
                             "fail_start is set") != std::string::npos);
}

TEST_CASE("plugins lists name, version, kind, ABI, file and config schema; --json too") {
    auto text = sbtest::run({sbtest::switchboard_binary(), "plugins", "--plugin-dir",
                             sbtest::plugin_dir()});
    CHECK(text.code == 0);
    CHECK(text.out.find("memory-source ") != std::string::npos);
    CHECK(text.out.find("memory-sink ") != std::string::npos);
    CHECK(text.out.find("  source  ABI 1.4  ") != std::string::npos);
    CHECK(text.out.find("    count (integer) [default 10, min 0]") != std::string::npos);

    auto json = sbtest::run({sbtest::switchboard_binary(), "plugins", "--json", "--plugin-dir",
                             sbtest::plugin_dir()});
    CHECK(json.code == 0);
    CHECK(json.out.find("\"abi\":{\"major\":1,\"minor\":4}") != std::string::npos);
    CHECK(json.out.find("\"name\":\"memory-sink\"") != std::string::npos);
    CHECK(json.out.find("\"kind\":\"destination\"") != std::string::npos);
    CHECK(json.out.find("{\"key\":\"count\",\"type\":\"integer\",\"required\":false,\"secret\":false,"
                        "\"multi\":false,\"default\":\"10\",\"min\":0,\"max\":null") !=
          std::string::npos);
}

TEST_CASE("--help everywhere; version; unknown commands and options are usage errors") {
    for (const char* cmd : {"run", "check", "plugins", "version"}) {
        auto r = sbtest::run({sbtest::switchboard_binary(), cmd, "--help"});
        CHECK(r.code == 0);
        CHECK(r.out.find(std::string("Usage: switchboard ") + cmd) != std::string::npos);
    }
    auto top = sbtest::run({sbtest::switchboard_binary(), "--help"});
    CHECK(top.code == 0);
    CHECK(top.out.find("Commands:") != std::string::npos);

    auto v = sbtest::run({sbtest::switchboard_binary(), "version"});
    CHECK(v.code == 0);
    // The second line names the malloc the binary runs on: the one the
    // build chose (meson's allocator, passed as SB_ALLOCATOR), so that a
    // build that says jemalloc and links something else fails here.
    const char* chosen = std::getenv("SB_ALLOCATOR");
    REQUIRE(chosen);
    const std::string expect = std::string(chosen) == "system" ? "glibc " : std::string(chosen) + " ";
    const std::string first = "switchboard 0.1.0 (plugin ABI 1.4)\n";
    CHECK(v.out.rfind(first + "malloc: " + expect, 0) == 0);
    CHECK(v.out.find('\n', first.size()) == v.out.size() - 1); // two lines

    auto unknown = sbtest::run({sbtest::switchboard_binary(), "frobnicate"});
    CHECK(unknown.code == 2);
    CHECK(unknown.err == "switchboard: unknown command 'frobnicate'; see switchboard --help\n");

    auto bad_opt = sbtest::run({sbtest::switchboard_binary(), "check", "--colour"});
    CHECK(bad_opt.code == 2);
    CHECK(bad_opt.err == "switchboard check: unknown option '--colour'; see switchboard check --help\n");

    auto no_config = sbtest::run({sbtest::switchboard_binary(), "run"});
    CHECK(no_config.code == 2);
}

namespace {
Http post(int port, const std::string& path, const std::string& body) {
    Poco::Net::HTTPClientSession session("127.0.0.1", static_cast<Poco::UInt16>(port));
    session.setTimeout(Poco::Timespan(5, 0));
    Poco::Net::HTTPRequest req(Poco::Net::HTTPRequest::HTTP_POST, path, Poco::Net::HTTPMessage::HTTP_1_1);
    req.setContentLength(static_cast<std::streamsize>(body.size()));
    session.sendRequest(req) << body;
    Poco::Net::HTTPResponse resp;
    std::istream& in = session.receiveResponse(resp);
    std::ostringstream out;
    out << in.rdbuf();
    return {static_cast<int>(resp.getStatus()), out.str()};
}
} // namespace

TEST_CASE("a plugin's HTTP route is served by the daemon's listener; its log lines name the "
          "instance and never the body") {
    TempDir data, dir;
    auto config = dir.write("hook.toml", "[node]\ndata_dir = \"d\"\n[sources.mem]\nplugin = "
                                         "\"memory-source\"\n[sources.mem.config]\ncount = 0\n");
    auto daemon = start(config.string(), data, {"--set", "log.level=debug"});
    int port = sbtest::ready_port(*daemon);
    // Acknowledged only once the journal has committed it.
    Http r = post(port, "/hooks/memory/mem", "content.text\tcontent.free_text\tCanary-Body-7731\n");
    CHECK(r.status == 202);
    CHECK(get(port, "/hooks/memory/other").status == 404);
    daemon->signal(SIGTERM);
    CHECK(daemon->wait(15s) == 0);
    CHECK(daemon->err().find("plugin[mem]: ") != std::string::npos);
    CHECK(daemon->err().find("Canary-Body-7731") == std::string::npos);
    // The audit trail has the ingest, with ids and counts only.
    std::string audit;
    for (auto& f : std::filesystem::directory_iterator(data.path / "audit")) {
        std::ifstream in(f.path());
        audit += std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    }
    // The ingest entry: its expiry, and the set of what it shares with the
    // source's other records of its kind (source, channel, category...).
    CHECK(audit.find("\tingest\tR1-0\texpires=") != std::string::npos);
    CHECK(audit.find("\tset\t-\tset=") != std::string::npos);
    CHECK(audit.find(";source=mem;channel=") != std::string::npos);
    CHECK(audit.find("Canary-Body-7731") == std::string::npos);
}

namespace {
std::vector<std::string> read_lines(const std::filesystem::path& file) {
    std::vector<std::string> out;
    std::ifstream in(file);
    for (std::string l; std::getline(in, l);)
        if (!l.empty()) out.push_back(l);
    return out;
}

std::string field_of(const std::string& line, const std::string& key) {
    std::string k = "\"" + key + "\":\"";
    auto at = line.find(k);
    if (at == std::string::npos) return {};
    return line.substr(at + k.size(), line.find('"', at + k.size()) - at - k.size());
}
} // namespace

TEST_CASE("kill -9 while a source streams: after restart every acknowledged record reaches each "
          "entitled destination, and no destination sees an id twice") {
    TempDir dir;
    std::filesystem::create_directories(dir.path / "in");
    auto config = dir.write("crash.toml", R"(
[node]
data_dir = "data"
[sources.stream]
plugin = "jsonl-source"
poll_interval = "20ms"
[sources.stream.config]
path = "in"
format = "flat"
batch = 200
categories = ["marker=reference.internal", "text=content.free_text"]
[destinations.one]
plugin = "memory-sink"
[destinations.one.config]
output = "one.jsonl"
[destinations.two]
plugin = "memory-sink"
[destinations.two.config]
output = "two.jsonl"
[[route]]
category = "unclassified"
destination = "one"
purpose = "crash test"
profile = "p"
[[route]]
category = "unclassified"
destination = "two"
purpose = "crash test"
profile = "p"
[profiles.p.fields]
"marker" = "keep"
)");
    std::mt19937 rng(7);
    int written = 0;
    auto write_more = [&](int round, int n) {
        std::ofstream out(dir.path / "in" / ("part-" + std::to_string(100 + round) + ".jsonl"));
        for (int i = 0; i < n; ++i, ++written)
            out << "{\"marker\":\"m-" << written << "\",\"text\":\"line " << written << "\"}\n";
    };
    const std::vector<std::string> argv = {sbtest::switchboard_binary(), "run", "-c", config.string(),
                                           "--plugin-dir", sbtest::plugin_dir(),
                                           "--set", "http.listen=127.0.0.1:0"};
    for (int round = 0; round < 5; ++round) {
        write_more(round, 3000);
        Process daemon(argv);
        REQUIRE(daemon.wait_for_log("core: ready", 20s));
        std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 400));
        daemon.signal(SIGKILL);
        REQUIRE(daemon.wait(10s));
    }
    // Once more, to the end.
    Process daemon(argv);
    REQUIRE(daemon.wait_for_log("core: ready", 20s));
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline &&
           (read_lines(dir.path / "one.jsonl").size() < static_cast<std::size_t>(written) ||
            read_lines(dir.path / "two.jsonl").size() < static_cast<std::size_t>(written)))
        std::this_thread::sleep_for(100ms);
    daemon.signal(SIGTERM);
    CHECK(daemon.wait(20s) == 0);
    for (const char* dest : {"one.jsonl", "two.jsonl"}) {
        auto out = read_lines(dir.path / dest);
        std::set<std::string> markers, ids;
        for (const auto& l : out) {
            markers.insert(field_of(l, "marker"));
            ids.insert(field_of(l, "record_id"));
        }
        INFO(dest);
        CHECK(out.size() == static_cast<std::size_t>(written)); // nothing twice
        CHECK(markers.size() == static_cast<std::size_t>(written)); // nothing lost
        CHECK(ids.size() == out.size());
    }
    // The audit trail survived the crashes intact.
    auto verify = sbtest::run({sbtest::switchboard_binary(), "audit", "verify", "-c", config.string()});
    INFO(verify.out << verify.err);
    CHECK(verify.code == 0);
}

TEST_CASE("audit verify detects an edited, a removed and a swapped entry, naming it") {
    TempDir dir;
    std::filesystem::create_directories(dir.path / "in");
    {
        std::ofstream out(dir.path / "in" / "a.jsonl");
        for (int i = 0; i < 20; ++i) out << "{\"n\":\"" << i << "\"}\n";
    }
    auto config = dir.write("audit.toml", R"(
[node]
data_dir = "data"
[sources.src]
plugin = "jsonl-source"
poll_interval = "20ms"
[sources.src.config]
path = "in"
format = "flat"
)");
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
    REQUIRE(daemon.wait_for_log("core: ready", 20s));
    std::this_thread::sleep_for(1s);
    daemon.signal(SIGTERM);
    REQUIRE(daemon.wait(20s) == 0);
    auto verify = [&] {
        return sbtest::run({sbtest::switchboard_binary(), "audit", "verify", "-c", config.string()});
    };
    auto ok = verify();
    REQUIRE(ok.code == 0);
    CHECK(ok.out.find("audit trail OK: 21 entries") != std::string::npos);

    std::filesystem::path file;
    for (auto& e : std::filesystem::directory_iterator(dir.path / "data" / "audit")) file = e.path();
    auto original = read_lines(file);
    REQUIRE(original.size() == 21);
    auto rewrite = [&](std::vector<std::string> lines) {
        std::ofstream out(file, std::ios::trunc);
        for (auto& l : lines) out << l << "\n";
    };
    std::string name = file.filename().string();

    auto edited = original;
    REQUIRE(edited[4].find("\tingest\t") != std::string::npos);
    edited[4].replace(edited[4].find("expires=2"), 9, "expires=3");
    rewrite(edited);
    auto r1 = verify();
    CHECK(r1.code == 1);
    CHECK(r1.out.find(name + ":5: entry 5: hash mismatch") != std::string::npos);

    auto removed = original;
    removed.erase(removed.begin() + 9);
    rewrite(removed);
    auto r2 = verify();
    CHECK(r2.code == 1);
    CHECK(r2.out.find("entry missing (seq 11 follows 9)") != std::string::npos);

    auto swapped = original;
    std::swap(swapped[14], swapped[15]);
    rewrite(swapped);
    auto r3 = verify();
    CHECK(r3.code == 1);
    CHECK(r3.out.find("out of order (seq 15 after 16)") != std::string::npos);

    auto truncated = original;
    truncated.resize(18);
    rewrite(truncated);
    auto r4 = verify();
    CHECK(r4.code == 1);
    INFO(r4.out);
    CHECK(r4.out.find("tail removed") != std::string::npos);

    rewrite(original);
    CHECK(verify().code == 0);
}

TEST_CASE("retention --dry-run lists what will expire and when; explain shows each decision") {
    TempDir dir;
    std::filesystem::create_directories(dir.path / "in");
    {
        std::ofstream out(dir.path / "in" / "a.jsonl");
        out << "{\"topic\":\"ctax\",\"citizen\":{\"name\":\"Ann Example\"},\"nino\":\"QQ123456C\"}\n";
        out << "{\"topic\":\"other\",\"citizen\":{\"name\":\"Bob Example\"}}\n";
    }
    auto config = dir.write("r.toml", R"(
[node]
data_dir = "data"
[sources.src]
plugin = "jsonl-source"
poll_interval = "20ms"
[sources.src.config]
path = "in"
format = "flat"
categories = ["citizen.*=identity", "nino=identifier.nino"]
[destinations.revs]
plugin = "memory-sink"
[[classify.rule]]
category = "council_tax"
field = "topic"
equals = "ctax"
[[route]]
category = "council_tax"
destination = "revs"
purpose = "council tax"
profile = "revs"
[profiles.revs.fields]
"citizen.name" = "keep"
[[retention.policy]]
category = "unclassified"
retention = "7d"
)");
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
    REQUIRE(daemon.wait_for_log("core: ready", 20s));
    std::this_thread::sleep_for(1s);
    daemon.signal(SIGTERM);
    REQUIRE(daemon.wait(20s) == 0);
    auto dry = sbtest::run({sbtest::switchboard_binary(), "retention", "-c", config.string(), "--dry-run"});
    CHECK(dry.code == 0);
    // Each expiry gets its own chunk: the unclassified record (7 days) first.
    CHECK(dry.out.find("R1-0            src               batch       unclassified") != std::string::npos);
    CHECK(dry.out.find("R2-0            src               batch       council_tax") != std::string::npos);
    CHECK(dry.out.find("(in 6d23h5") != std::string::npos);
    CHECK(dry.out.find("council_tax") != std::string::npos);
    CHECK(dry.out.find("2 record(s) will expire (src: 2); nothing was deleted (dry run)") != std::string::npos);
    auto within = sbtest::run({sbtest::switchboard_binary(), "retention", "-c", config.string(), "--dry-run",
                               "--within", "8d"});
    CHECK(within.out.find("1 record(s) will expire within 8d") != std::string::npos);
    auto pending = sbtest::run({sbtest::switchboard_binary(), "retention", "-c", config.string(), "--pending"});
    CHECK(pending.out == "no erase steps outstanding\n");

    auto record = dir.write("rec.json", R"({"meta":{"channel":"phone"},"fields":{"topic":"ctax","citizen":{"name":"Ann Example","dob":"1980-01-01"}},"categories":{"citizen.*":"identity"}})");
    auto ex = sbtest::run({sbtest::switchboard_binary(), "explain", "-c", config.string(), "--plugin-dir",
                           sbtest::plugin_dir(), record.string()});
    INFO(ex.err);
    CHECK(ex.code == 0);
    CHECK(ex.out.find("category  council_tax, by classify.rule[0] (topic equals \"ctax\")") != std::string::npos);
    CHECK(ex.out.find("\"fields\":{\"citizen\":{\"name\":\"Ann Example\"}}") != std::string::npos);
    CHECK(ex.out.find("citizen.dob") != std::string::npos);
    CHECK(ex.out.find("dropped: not in profile revs") != std::string::npos);
    auto bad = dir.write("bad.json", "{\"fields\": [1,2,");
    auto exbad = sbtest::run({sbtest::switchboard_binary(), "explain", "-c", config.string(), "--plugin-dir",
                              sbtest::plugin_dir(), bad.string()});
    CHECK(exbad.code == 2);
    CHECK(exbad.err.find("bad.json: not a record: ") != std::string::npos);
}

TEST_CASE("input that could not be parsed is quarantined, and card numbers in it are not kept") {
    TempDir dir;
    std::filesystem::create_directories(dir.path / "in");
    {
        std::ofstream out(dir.path / "in" / "a.jsonl");
        out << "{\"n\":\"fine\"}\n";
        out << "{\"text\":\"card 4111 1111 1111 1111 and Canary-Broken-Line\", oops\n";
    }
    auto config = dir.write("q.toml", R"(
[node]
data_dir = "data"
[sources.src]
plugin = "jsonl-source"
poll_interval = "20ms"
[sources.src.config]
path = "in"
format = "flat"
)");
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
    REQUIRE(daemon.wait_for_log("core: ready", 20s));
    REQUIRE(daemon.wait_for_log("quarantined a.jsonl:2", 10s));
    daemon.signal(SIGTERM);
    REQUIRE(daemon.wait(20s) == 0);
    CHECK(daemon.err().find("Canary-Broken-Line") == std::string::npos);
    std::string raw;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir.path / "data"))
        if (e.is_regular_file()) {
            std::ifstream in(e.path(), std::ios::binary);
            raw += std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        }
    // The line is kept as evidence (it expires like everything else) ...
    CHECK(raw.find("Canary-Broken-Line") != std::string::npos);
    // ... but not the card number in it.
    CHECK(raw.find("4111 1111 1111 1111") == std::string::npos);
    CHECK(raw.find("\tquarantine\t-\tinstance=src;ref=a.jsonl:2") != std::string::npos);
}
