// zmq-feed end to end: `switchboard keygen` makes the keys, the real daemon
// runs a memory-source into a zmq-feed destination, and a raw ZeroMQ client
// in the test (feed_client.hpp) receives and acknowledges. The client is
// killed mid-stream and comes back: nothing lost, nothing sent again at or
// below its acknowledged position; another department's key gets nothing,
// and its refused handshake is in the audit trail. Erase notices left
// unanswered past retention.receipt_deadline are marked overdue.
#include "feed_client.hpp"
#include "process.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using feedtest::FeedClient;
using feedtest::KeyPair;
using sbtest::Process;
using sbtest::TempDir;
namespace fs = std::filesystem;

namespace {

using sbtest::audit_lines;

std::string first_line(const fs::path& p) {
    std::ifstream in(p);
    std::string l;
    std::getline(in, l);
    return l;
}

// `switchboard keygen NAME --dir DIR`; the key pair it wrote.
KeyPair keygen(const fs::path& dir, const std::string& name) {
    Process p({sbtest::switchboard_binary(), "keygen", name, "--dir", dir.string()});
    auto code = p.wait(10s);
    INFO(p.err());
    REQUIRE(code == 0);
    return {first_line(dir / (name + ".pub")), first_line(dir / (name + ".key"))};
}

} // namespace

TEST_CASE("switchboard keygen writes a CURVE key pair, the secret 0600, and never overwrites") {
    TempDir dir;
    KeyPair k = keygen(dir.path, "dept");
    CHECK(k.pub.size() == 40);
    CHECK(k.secret.size() == 40);
    char derived[41] = {};
    REQUIRE(zmq_curve_public(derived, k.secret.c_str()) == 0);
    CHECK(std::string(derived) == k.pub); // the pair zmq would make
    struct stat st {};
    REQUIRE(::stat((dir.path / "dept.key").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);

    Process again({sbtest::switchboard_binary(), "keygen", "dept", "--dir", dir.path.string()});
    CHECK(again.wait(10s) == 1);
    CHECK(again.err().find("exists; not overwriting") != std::string::npos);
    CHECK(first_line(dir.path / "dept.key") == k.secret);

    Process bad({sbtest::switchboard_binary(), "keygen", "../escape", "--dir", dir.path.string()});
    CHECK(bad.wait(10s) == 2);
}

TEST_CASE("zmq-feed end to end: all records reach the department once it acknowledges, across a kill; "
          "another department's key gets nothing") {
    TempDir dir;
    KeyPair server = keygen(dir.path, "server");
    KeyPair housing = keygen(dir.path, "housing");
    KeyPair waste = keygen(dir.path, "waste"); // another department: not listed here
    constexpr int kRecords = 300;
    auto config = dir.write("feed.toml", R"(
[node]
data_dir = "data"
[sources.synthetic]
plugin = "memory-source"
poll_interval = "10ms"
[sources.synthetic.config]
count = )" + std::to_string(kRecords) + R"(
interval = "0ms"
[destinations.housing]
plugin = "zmq-feed"
batch = 64
[destinations.housing.config]
endpoint = "tcp://127.0.0.1:*"
server_secret_key = "file:server.key"
clients = [")" + housing.pub + R"("]
ack_timeout = "2s"
[[route]]
category = ["*", "unclassified"]
destination = "housing"
purpose = "zmq-feed end-to-end test"
profile = "all"
lawful_basis = "test"
[profiles.all.fields]
"*" = "keep"
)");
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
    REQUIRE(daemon.wait_for_log("core: ready", 20s));
    auto listening = daemon.wait_for_log("listening on (tcp://127\\.0\\.0\\.1:[0-9]+) \\(CURVE, server public key (\\S+),",
                                         10s);
    INFO(daemon.err());
    REQUIRE(listening);
    const std::string endpoint = (*listening)[1];
    CHECK((*listening)[2] == server.pub);

    // Another department's key: no session, no record, and the refusal is
    // logged with the key.
    {
        FeedClient stranger(endpoint, server.pub, &waste);
        stranger.hello(0, 10000);
        CHECK_FALSE(stranger.receive(800ms));
        const std::string quoted = std::regex_replace(waste.pub, std::regex(R"([\^$.|?*+()\[\]{}\\])"), "\\$&");
        CHECK(daemon.wait_for_log("handshake refused: client key " + quoted, 5s));
    }

    std::map<std::string, std::int64_t> first_seen; // record id -> seq
    std::int64_t acked = 0;
    // Session 1: acknowledge every 10 records, then die at 100 received
    // with 10 unacknowledged.
    {
        FeedClient c(endpoint, server.pub, &housing);
        c.hello(0, 50);
        REQUIRE(c.expect("WELCOME", 10s));
        int received = 0;
        while (received < 100) {
            daemon.pump(0);
            auto m = c.expect("RECORD", 10s);
            REQUIRE(m);
            std::int64_t seq = m->integer("seq");
            CHECK(seq == received + 1); // in order, from 1
            first_seen.emplace(m->string("id"), seq);
            ++received;
            if (received % 10 == 0 && received < 100) {
                c.ack(seq);
                acked = seq;
            }
        }
        CHECK(acked == 90);
        // Killed: no BYE, 91..100 unacknowledged.
    }
    // Session 2: resumes after 90; nothing at or below 90 comes again, and
    // each id comes once.
    std::set<std::string> second;
    {
        FeedClient c(endpoint, server.pub, &housing);
        c.hello(acked, 50);
        auto w = c.expect("WELCOME", 10s);
        REQUIRE(w);
        CHECK(w->integer("next") == 91);
        std::int64_t last = acked;
        while (last < kRecords) {
            daemon.pump(0);
            auto m = c.expect("RECORD", 15s);
            REQUIRE(m);
            std::int64_t seq = m->integer("seq");
            REQUIRE(seq == last + 1); // in order, no gap, nothing at or below the acked position
            std::string id = m->string("id");
            CHECK(second.insert(id).second);
            if (seq <= 100) CHECK(first_seen.at(id) == seq); // a resend: same seq, same id
            last = seq;
            if (seq % 25 == 0 || seq == kRecords) c.ack(seq);
        }
        // Nothing more: everything is acknowledged.
        CHECK_FALSE(c.receive(2500ms));
        c.send("BYE", "{}");
    }
    std::set<std::string> all;
    for (const auto& [id, seq] : first_seen)
        if (seq <= 90) all.insert(id);
    all.insert(second.begin(), second.end());
    CHECK(all.size() == static_cast<std::size_t>(kRecords));
    CHECK(second.size() == static_cast<std::size_t>(kRecords - 90));

    daemon.signal(SIGTERM);
    CHECK(daemon.wait(20s) == 0);
    // No record content in the log; the feed's own lines only name ids and counts.
    CHECK(daemon.err().find("\"fields\"") == std::string::npos);

    // The refused handshake is in the (hash-chained) audit trail, with the
    // feed named and the key that tried.
    int refusals = 0;
    for (const auto& l : audit_lines(dir.path / "data"))
        if (l.find("\tplugin\t-\t") != std::string::npos && l.find("instance=housing;") != std::string::npos &&
            l.find(";event=handshake_refused;") != std::string::npos &&
            l.find("key=" + waste.pub + " address=127.0.0.1") != std::string::npos)
            ++refusals;
    CHECK(refusals == 1);
    auto verify = sbtest::run({sbtest::switchboard_binary(), "audit", "verify", "-c", config.string()});
    INFO(verify.out << verify.err);
    CHECK(verify.code == 0);
}

TEST_CASE("zmq-feed end to end: erase notices unanswered past retention.receipt_deadline are overdue") {
    TempDir dir;
    KeyPair server = keygen(dir.path, "server");
    KeyPair housing = keygen(dir.path, "housing");
    auto config = dir.write("feed.toml", R"(
[node]
data_dir = "data"
[retention]
default = "2s"
sweep_interval = "200ms"
receipt_deadline = "1s"
[sources.synthetic]
plugin = "memory-source"
poll_interval = "10ms"
[sources.synthetic.config]
count = 3
interval = "0ms"
[destinations.housing]
plugin = "zmq-feed"
[destinations.housing.config]
endpoint = "tcp://127.0.0.1:*"
server_secret_key = "file:server.key"
clients = [")" + housing.pub + R"("]
[[route]]
category = ["*", "unclassified"]
destination = "housing"
purpose = "zmq-feed end-to-end test"
profile = "all"
lawful_basis = "test"
[profiles.all.fields]
"*" = "keep"
)");
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
    REQUIRE(daemon.wait_for_log("core: ready", 20s));
    auto listening = daemon.wait_for_log("listening on (tcp://127\\.0\\.0\\.1:[0-9]+) \\(CURVE", 10s);
    INFO(daemon.err());
    REQUIRE(listening);
    {
        // The department takes the records, then ignores the erase notices.
        FeedClient c((*listening)[1], server.pub, &housing);
        c.hello(0, 50);
        REQUIRE(c.expect("WELCOME", 10s));
        for (int i = 1; i <= 3; ++i) REQUIRE(c.expect("RECORD", 10s));
        c.ack(3);
        REQUIRE(c.expect("ERASE", 20s));
        CHECK(daemon.wait_for_log("erase task\\(s\\) unconfirmed for longer than retention\\.receipt_deadline "
                                  "\\(1s\\): missing deletion receipts",
                                  15s));
    }
    daemon.signal(SIGTERM);
    CHECK(daemon.wait(20s) == 0);
    auto pending = sbtest::run({sbtest::switchboard_binary(), "retention", "-c", config.string(), "--pending"});
    INFO(pending.out << pending.err);
    CHECK(pending.code == 0);
    CHECK(pending.out.find("OVERDUE (unconfirmed for longer than retention.receipt_deadline, 1s)") !=
          std::string::npos);
    CHECK(pending.out.find("notice to housing: ") != std::string::npos);
    CHECK(pending.out.find("[OVERDUE: no receipt]") != std::string::npos);
}
