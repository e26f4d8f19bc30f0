// The `switchboard-feed` command as a department runs it: a real process
// against a real CURVE feed server (feed_test_server.hpp).

#include "feed_test_server.hpp"

#include "process.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <fstream>
#include <sstream>

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using feedtest::Keypair;
using feedtest::ServerOptions;
using feedtest::TestFeedServer;

namespace {

std::string feed_binary() { return sbtest::env_or_fail("SB_FEED_BINARY"); }

std::vector<std::string> out_ids(const fs::path& dir) {
    std::vector<fs::path> files;
    if (fs::exists(dir))
        for (const auto& e : fs::directory_iterator(dir))
            if (e.path().extension() == ".jsonl") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    std::vector<std::string> ids;
    for (const auto& f : files) {
        std::ifstream in(f);
        for (std::string l; std::getline(in, l);)
            ids.push_back(Poco::JSON::Parser().parse(l).extract<Poco::JSON::Object::Ptr>()->getValue<std::string>("id"));
    }
    return ids;
}

std::string rid(int i) { return "R" + std::to_string(100000 + i); }
const std::string kCanary = R"({"fields":{"citizen":{"name":"CANARY-Ada-Lovelace"}}})";

struct Setup {
    sbtest::TempDir tmp{"sb-feedcmd"};
    Keypair client = Keypair::make();
    fs::path key, pub, server_pub;
    Setup() {
        key = tmp.write("dept.key", "# secret\n" + client.sec + "\n");
        ::chmod(key.c_str(), 0600);
        pub = tmp.write("dept.pub", client.pub + "\n");
    }
    ServerOptions server_options() const {
        ServerOptions o;
        o.allowed = {client.pub};
        return o;
    }
    std::vector<std::string> args(const TestFeedServer& s, std::vector<std::string> sink) {
        server_pub = tmp.write("server.pub", s.public_key() + "\n");
        std::vector<std::string> a = {feed_binary(), "--endpoint", s.endpoint(), "--server-key", server_pub.string(),
                                      "--key", key.string(), "--state", (tmp.path / "state").string()};
        a.insert(a.end(), sink.begin(), sink.end());
        return a;
    }
};

} // namespace

TEST_CASE("switchboard-feed killed mid-stream and restarted loses nothing and duplicates nothing", "[feed][command]") {
    Setup s;
    TestFeedServer server(s.server_options());
    const int total = 3000;
    std::atomic<bool> stop_feeding{false};
    std::thread feeder([&] {
        for (int i = 1; i <= total && !stop_feeding; ++i) {
            server.add_record(rid(i), kCanary);
            if (i % 10 == 0) std::this_thread::sleep_for(5ms);
        }
    });
    struct Join {
        std::thread& t;
        std::atomic<bool>& stop;
        ~Join() {
            stop = true;
            if (t.joinable()) t.join();
        }
    } join{feeder, stop_feeding};
    fs::path out = s.tmp.path / "out";
    auto argv = s.args(server, {"--out", out.string(), "--credit", "20"});
    std::int64_t at_kill = 0;
    {
        sbtest::Process p(argv);
        REQUIRE(server.wait_until([&] { return server.acked() >= 600; }, 30s));
        p.signal(SIGKILL);
        REQUIRE(p.wait(5s).value_or(-1) == 128 + SIGKILL);
        at_kill = server.acked();
        CHECK(p.err().find("CANARY") == std::string::npos);
    }
    CHECK(at_kill < total); // it was killed mid-stream
    sbtest::Process p(argv);
    REQUIRE(server.wait_until([&] { return server.acked() == total; }, 60s));
    auto hellos = server.hellos();
    REQUIRE(hellos.size() >= 2);
    CHECK(hellos.back().acked >= at_kill);
    auto ids = out_ids(out);
    REQUIRE(ids.size() == static_cast<std::size_t>(total));
    for (int i = 1; i <= total; ++i) REQUIRE(ids[static_cast<std::size_t>(i - 1)] == rid(i));

    // SIGTERM: a clean stop that says goodbye and reports where it stopped.
    p.signal(SIGTERM);
    REQUIRE(p.wait(10s) == 0);
    CHECK(server.wait_until([&] { return server.byes() >= 1; }, 5s));
    CHECK(p.err().find("stopped at position " + std::to_string(total)) != std::string::npos);
    CHECK(p.err().find("CANARY") == std::string::npos);
    std::ifstream pos(s.tmp.path / "state" / "position");
    std::string line;
    std::getline(pos, line);
    CHECK(line == std::to_string(total));
}

TEST_CASE("switchboard-feed --stdout prints records and erase notices; logs carry no content", "[feed][command]") {
    Setup s;
    TestFeedServer server(s.server_options());
    for (int i = 1; i <= 3; ++i) server.add_record(rid(i), kCanary);
    sbtest::Process p(s.args(server, {"--stdout"}));
    REQUIRE(server.wait_until([&] { return server.acked() == 3; }, 20s));
    server.add_erase("E1", rid(2), 2, "retention");
    REQUIRE(server.wait_until([&] { return server.erased().size() == 1; }, 20s));
    CHECK(server.erased()[0].receipt.find("passed to the reader of standard output") != std::string::npos);
    p.signal(SIGINT);
    REQUIRE(p.wait(10s) == 0);
    std::istringstream out(p.out());
    std::vector<std::string> lines;
    for (std::string l; std::getline(out, l);) lines.push_back(l);
    REQUIRE(lines.size() == 4);
    CHECK(lines[0].find("\"id\":\"" + rid(1) + "\"") != std::string::npos);
    CHECK(lines[0].find("CANARY-Ada-Lovelace") != std::string::npos);
    CHECK(lines[3] == R"({"erase":{"notice":"E1","record_id":")" + rid(2) + R"(","seq":2,"reason":"retention"}})");
    CHECK(p.err().find("CANARY") == std::string::npos);
    CHECK(p.err().find("erase notice E1 (retention) for record " + rid(2) + " carried out") != std::string::npos);
}

TEST_CASE("switchboard-feed refuses bad arguments with a message naming them", "[feed][command]") {
    Setup s;
    auto bin = feed_binary();
    auto st = (s.tmp.path / "st").string();
    struct Case {
        std::vector<std::string> args;
        int code;
        std::string message;
    };
    std::vector<Case> cases = {
        {{}, 2, "--endpoint is required"},
        {{"--endpoint", "tcp://127.0.0.1:1"}, 2, "--state is required"},
        {{"--endpoint", "tcp://127.0.0.1:1", "--state", st}, 2, "exactly one of --out DIR, --stdout, --exec"},
        {{"--endpoint", "tcp://127.0.0.1:1", "--state", st, "--stdout", "--out", "x"}, 2, "exactly one of"},
        {{"--endpoint", "tcp://127.0.0.1:1", "--state", st, "--stdout"}, 2, "--server-key is required"},
        {{"--endpoint", "tcp://127.0.0.1:1", "--state", st, "--stdout", "--credit", "lots"}, 2,
         "--credit: expected a whole number from 1 to 10000 (found 'lots')"},
        {{"--endpoint", "tcp://127.0.0.1:1", "--state", st, "--stdout", "--credit", "10001"}, 2, "--credit"},
        {{"--endpoint", "tcp://127.0.0.1:1", "--state", st, "--stdout", "--bogus"}, 2, "unknown argument '--bogus'"},
        {{"--endpoint", "tcp://127.0.0.1:1", "--state", st, "--stdout", "--endpoint", "tcp://x:1"}, 2,
         "--endpoint: given twice"},
        {{"--endpoint", "tcp://127.0.0.1:1", "--state", st, "--stdout", "--log-level", "loud"}, 2, "--log-level"},
        {{"--endpoint", "tcp://127.0.0.1:1", "--state", st, "--stdout", "--server-key", "short", "--key",
          s.key.string()},
         1, "--server-key: cannot read key file short"},
        {{"--endpoint", "tcp://127.0.0.1:1", "--state", st, "--stdout", "--server-key", s.pub.string(), "--key",
          s.client.sec},
         2, "is not a file (a secret key is never given on the command line)"},
        {{"--endpoint", "udp://127.0.0.1:1", "--state", st, "--stdout", "--insecure"}, 2, "expected tcp://HOST:PORT"},
        {{"--endpoint", "tcp://127.0.0.1:1", "--state", st, "--stdout", "--insecure", "--key", "x"}, 2,
         "plaintext feeds take no --server-key or --key"},
    };
    for (auto& c : cases) {
        std::vector<std::string> argv = {bin};
        argv.insert(argv.end(), c.args.begin(), c.args.end());
        auto r = sbtest::run(argv, 10s);
        INFO("args: " << r.err);
        CHECK(r.code == c.code);
        CHECK(r.err.find(c.message) != std::string::npos);
    }
    // A public key that is not the secret key's.
    auto other = s.tmp.write("other.key", Keypair::make().sec + "\n");
    ::chmod(other.c_str(), 0600);
    s.tmp.write("other.pub", s.client.pub + "\n");
    auto r = sbtest::run({bin, "--endpoint", "tcp://127.0.0.1:1", "--state", st, "--stdout", "--server-key",
                          s.client.pub, "--key", other.string()},
                         10s);
    CHECK(r.code == 1);
    CHECK(r.err.find("is not the public key of") != std::string::npos);
}

TEST_CASE("switchboard-feed keygen writes a key pair the client and server accept", "[feed][command]") {
    sbtest::TempDir tmp("sb-feedkey");
    auto name = (tmp.path / "housing").string();
    auto r = sbtest::run({feed_binary(), "keygen", name}, 10s);
    REQUIRE(r.code == 0);
    struct stat sb {};
    REQUIRE(::stat((name + ".key").c_str(), &sb) == 0);
    CHECK((sb.st_mode & 0777) == 0600);
    std::ifstream in(name + ".pub");
    std::string pub;
    std::getline(in, pub);
    CHECK(pub.size() == 40);
    // Refuses to overwrite.
    auto again = sbtest::run({feed_binary(), "keygen", name}, 10s);
    CHECK(again.code == 1);
    CHECK(again.err.find("exists; not overwriting") != std::string::npos);

    // The pair works: the server admits the .pub, the client reads the .key.
    ServerOptions o;
    o.allowed = {pub};
    TestFeedServer server(o);
    server.add_record(rid(1));
    auto spub = tmp.write("server.pub", server.public_key());
    sbtest::Process p({feed_binary(), "--endpoint", server.endpoint(), "--server-key", spub.string(), "--key",
                       name + ".key", "--state", (tmp.path / "st").string(), "--out", (tmp.path / "out").string()});
    REQUIRE(server.wait_until([&] { return server.acked() == 1; }, 20s));
    p.signal(SIGTERM);
    CHECK(p.wait(10s) == 0);
}
