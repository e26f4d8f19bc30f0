// docs/departments.md's Python example (feed/examples/feed_client.py, with
// Debian's python3-zmq) against the same CURVE feed server as the C++ client.

#include "feed_test_server.hpp"

#include "process.hpp"

#include <catch2/catch.hpp>

#include <sstream>

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using feedtest::Keypair;
using feedtest::ServerOptions;
using feedtest::TestFeedServer;

namespace {
std::string rid(int i) { return "R" + std::to_string(100000 + i); }

std::vector<std::string> lines_of(const std::string& text) {
    std::istringstream in(text);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
}
} // namespace

TEST_CASE("the Python example receives, acknowledges, resumes and confirms erasure", "[feed][python]") {
    std::string python = sbtest::env_or_fail("SB_FEED_PYTHON");
    std::string example = sbtest::env_or_fail("SB_FEED_EXAMPLE");
    auto check = sbtest::run({python, "-c", "import zmq; assert zmq.has('curve')"}, 30s);
    INFO("python3-zmq with CURVE is needed (scripts/install-deps installs it): " << check.err);
    REQUIRE(check.code == 0);

    sbtest::TempDir tmp("sb-feedpy");
    auto client = Keypair::make();
    auto key = tmp.write("dept.key", "# secret\n" + client.sec + "\n");
    ServerOptions o;
    o.allowed = {client.pub};
    TestFeedServer server(o);
    auto spub = tmp.write("server.pub", server.public_key() + "\n");
    for (int i = 1; i <= 3; ++i) server.add_record(rid(i), R"({"fields":{"name":"CANARY-Grace"}})");
    std::vector<std::string> argv = {python, example, "--endpoint", server.endpoint(), "--server-key", spub.string(),
                                     "--key", key.string(), "--state", (tmp.path / "state").string(), "--credit", "2"};
    {
        sbtest::Process p(argv);
        REQUIRE(server.wait_until([&] { return server.acked() == 3; }, 30s));
        CHECK(server.max_in_flight() <= 2);
        // Version 2: the records came several a message (RECORDS).
        CHECK(server.hellos()[0].protocol == 2);
        CHECK(server.messages_sent() < server.records_sent());
        server.add_erase("E1", rid(2), 2, "request");
        REQUIRE(server.wait_until([&] { return server.erased().size() == 1; }, 30s));
        CHECK(server.erased()[0].notice == "E1");
        CHECK(server.erased()[0].record_id == rid(2));
        CHECK(server.erased()[0].receipt.find("passed to the reader") != std::string::npos);
        p.signal(SIGTERM);
        REQUIRE(p.wait(15s) == 0);
        CHECK(server.wait_until([&] { return server.byes() == 1; }, 5s));
        auto lines = lines_of(p.out());
        REQUIRE(lines.size() == 4);
        for (int i = 1; i <= 3; ++i)
            CHECK(lines[static_cast<std::size_t>(i - 1)].find("\"id\":\"" + rid(i) + "\"") != std::string::npos);
        CHECK(lines[3].find("\"erase\"") != std::string::npos);
        CHECK(p.err().find("CANARY") == std::string::npos);
    }
    // Restarted: HELLO with its position; resends are not printed again.
    server.set_resend_from_start(true);
    server.add_record(rid(4));
    sbtest::Process p(argv);
    REQUIRE(server.wait_until([&] { return server.acked() == 4; }, 30s));
    REQUIRE(server.hellos().size() == 2);
    CHECK(server.hellos()[1].acked == 3);
    p.signal(SIGTERM);
    REQUIRE(p.wait(15s) == 0);
    auto lines = lines_of(p.out());
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find("\"id\":\"" + rid(4) + "\"") != std::string::npos);
}
