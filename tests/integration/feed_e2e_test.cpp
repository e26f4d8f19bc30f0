// Department feeds end to end, every part real: the daemon (subprocess)
// reads a JSON-lines file, classifies and minimises, and delivers to two
// zmq-feed departments with different profiles; the departments run the
// real `switchboard-feed` command (subprocesses) writing to --out
// directories. Each department receives exactly its records with only its
// profile's fields; a client killed with SIGKILL mid-stream and restarted
// loses nothing and duplicates nothing; a client with the wrong key gets
// nothing; an erase notice from the retention clock deletes the record from
// the client's directory and the client's receipt lands in the audit trail.
#include "feed_e2e.hpp"
#include "process.hpp"

#include <catch2/catch.hpp>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using sbtest::Process;
using sbtest::TempDir;
using namespace sbtest::feeds;
namespace fs = std::filesystem;

namespace {

constexpr int kRevenues = 600; // council tax contacts: the revenues department
constexpr int kWaste = 150;    // missed bins: the waste department

// The input: kRevenues "ctax" and kWaste "bins" contacts, interleaved. Every
// line carries a NINO that neither profile passes.
void write_contacts(const fs::path& file) {
    std::ofstream out(file);
    int r = 0, w = 0;
    for (int i = 0; r < kRevenues || w < kWaste; ++i) {
        bool bins = w < kWaste && (i % 5 == 4 || r >= kRevenues);
        std::string ref = bins ? "W-" + std::to_string(++w) : "R-" + std::to_string(++r);
        out << R"({"ref":")" << ref << R"(","topic":")" << (bins ? "bins" : "ctax")
            << R"(","citizen":{"name":"Resident )" << i << R"(","nino":"QQ123456C"},)"
            << R"("address":{"line1":")" << i << R"( Example Street","postcode":"L8 0ZZ"},)"
            << R"("note":"contact number )" << i << "\"}\n";
    }
}

const char* kClassifyAndProfiles = R"(
[[classify.rule]]
category = "council_tax"
field = "topic"
equals = "ctax"
[[classify.rule]]
category = "missed_bin"
field = "topic"
equals = "bins"
[[route]]
category = "council_tax"
destination = "revenues"
purpose = "answer the council tax query"
profile = "revenues"
[[route]]
category = "missed_bin"
destination = "waste"
purpose = "arrange a return collection"
profile = "waste"
[profiles.revenues.fields]
"ref" = "keep"
"citizen.name" = "keep"
"note" = "keep"
[profiles.waste.fields]
"ref" = "keep"
"address.line1" = "keep"
"address.postcode" = "keep"
)";

const char* kSource = R"(
[sources.contacts]
plugin = "jsonl-source"
poll_interval = "50ms"
[sources.contacts.config]
path = "in"
format = "flat"
categories = ["ref=reference.internal", "topic=classification.hint", "citizen.name=identity.name",
              "citizen.nino=identifier.nino", "address.*=contact.address", "note=content.free_text"]
)";

} // namespace

TEST_CASE("feeds end to end: two departments' switchboard-feed clients each get exactly their records "
          "and fields, across a kill -9; wrong keys get nothing") {
    TempDir dir("sb-feed-e2e");
    const fs::path keys = dir.path / "keys";
    fs::create_directories(keys);
    keygen(keys, "server");
    keygen(keys, "revenues");
    const std::string waste_pub = keygen(keys, "waste");
    const std::string stranger_pub = keygen(keys, "stranger"); // listed nowhere
    fs::create_directories(dir.path / "in");
    write_contacts(dir.path / "in" / "contacts.jsonl");
    // Revenues lists its key by file (client_key_files, relative to the
    // config), waste by value (clients).
    auto config = dir.write("feeds.toml", std::string(R"(
[node]
data_dir = "data"
[destinations.revenues]
plugin = "zmq-feed"
[destinations.revenues.config]
endpoint = "tcp://127.0.0.1:*"
server_secret_key = "file:keys/server.key"
client_key_files = ["keys/revenues.pub"]
ack_timeout = "2s"
[destinations.waste]
plugin = "zmq-feed"
[destinations.waste.config]
endpoint = "tcp://127.0.0.1:*"
server_secret_key = "file:keys/server.key"
clients = [")") + waste_pub + R"("]
ack_timeout = "2s"
)" + kSource + kClassifyAndProfiles);
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
    REQUIRE(daemon.wait_for_log("core: ready", 30s));
    const std::string revenues_ep = endpoint_of(daemon, "revenues");
    const std::string waste_ep = endpoint_of(daemon, "waste");
    const fs::path out = dir.path / "out", state = dir.path / "state";

    // The wrong keys, connected all along: waste's key at the revenues feed,
    // a key listed nowhere at the waste feed.
    auto wrong_dept = feed(revenues_ep, keys, "waste", state / "wrong-dept", out / "wrong-dept");
    auto stranger = feed(waste_ep, keys, "stranger", state / "stranger", out / "stranger");
    auto waste = feed(waste_ep, keys, "waste", state / "waste", out / "waste");
    // Revenues takes one record per batch, so that the stream is still
    // flowing when it is killed.
    auto revenues = feed(revenues_ep, keys, "revenues", state / "revenues", out / "revenues", 1);
    auto procs = [&] {
        return std::vector<Process*>{&daemon, wrong_dept.get(), stranger.get(), waste.get(), revenues.get()};
    };

    // Kill -9 mid-stream: some records written, not all.
    std::size_t at_kill = 0;
    bool started = wait_until([&] { return (at_kill = line_count(out / "revenues")) >= 20; }, 60s, procs(), 5ms);
    INFO(daemon.err());
    INFO(revenues->err());
    REQUIRE(started);
    revenues->signal(SIGKILL);
    REQUIRE(revenues->wait(10s) == 128 + SIGKILL);
    at_kill = line_count(out / "revenues");
    REQUIRE(at_kill < static_cast<std::size_t>(kRevenues)); // it was mid-stream
    revenues = feed(revenues_ep, keys, "revenues", state / "revenues", out / "revenues");

    bool all = wait_until(
        [&] {
            return line_count(out / "revenues") >= static_cast<std::size_t>(kRevenues) &&
                   line_count(out / "waste") >= static_cast<std::size_t>(kWaste);
        },
        120s, procs());
    INFO(revenues->err());
    INFO(waste->err());
    CHECK(all);
    // Clean stops: the batch in hand finished, BYE sent, exit 0.
    for (Process* p : {revenues.get(), waste.get(), wrong_dept.get(), stranger.get()}) {
        p->signal(SIGTERM);
        CHECK(p->wait(20s) == 0);
    }

    struct Expect {
        const char* name;
        const char* prefix;
        int count;
        std::set<std::string> fields;
    };
    for (const Expect& e : {Expect{"revenues", "R-", kRevenues, {"ref", "citizen.name", "note"}},
                            Expect{"waste", "W-", kWaste, {"ref", "address.line1", "address.postcode"}}}) {
        INFO(e.name);
        auto lines = read_out(out / e.name);
        std::set<std::string> ids, refs;
        std::int64_t last_seq = 0;
        bool in_order = true;
        for (const auto& l : lines) {
            CHECK(ids.insert(l.id).second); // nothing twice, by record id
            refs.insert(l.ref);
            CHECK(l.profile == e.name);
            CHECK(l.fields == e.fields); // the profile's fields, no more, no fewer
            in_order = in_order && l.seq > last_seq;
            last_seq = l.seq;
        }
        CHECK(in_order);
        CHECK(lines.size() == static_cast<std::size_t>(e.count));
        std::set<std::string> expected;
        for (int i = 1; i <= e.count; ++i) expected.insert(e.prefix + std::to_string(i));
        CHECK(refs == expected); // exactly its records: all of them, none of the other department's
        // Neither profile passes the NINO or the topic.
        for (const auto& entry : fs::directory_iterator(out / e.name)) {
            std::string text = read_file(entry.path());
            CHECK(text.find("QQ123456C") == std::string::npos);
            CHECK(text.find("\"topic\"") == std::string::npos);
        }
    }
    CHECK(line_count(out / "wrong-dept") == 0);
    CHECK(line_count(out / "stranger") == 0);
    CHECK(daemon.err().find("handshake refused: client key " + waste_pub) != std::string::npos);
    CHECK(daemon.err().find("handshake refused: client key " + stranger_pub) != std::string::npos);

    daemon.signal(SIGTERM);
    CHECK(daemon.wait(30s) == 0);
    // No record content in any log.
    for (const std::string& log : {daemon.err(), revenues->err(), waste->err()}) {
        CHECK(log.find("QQ123456C") == std::string::npos);
        CHECK(log.find("Resident ") == std::string::npos);
        CHECK(log.find("Example Street") == std::string::npos);
    }
}

TEST_CASE("feeds end to end: the retention clock's erase notice reaches switchboard-feed, which deletes "
          "the record from its directory; its receipt is in the audit trail") {
    TempDir dir("sb-feed-erase");
    const fs::path keys = dir.path / "keys";
    fs::create_directories(keys);
    keygen(keys, "server");
    keygen(keys, "revenues");
    fs::create_directories(dir.path / "in");
    {
        std::ofstream in(dir.path / "in" / "contacts.jsonl");
        in << R"({"ref":"R-1","topic":"ctax","citizen":{"name":"Ann Example"},"note":"short-lived"})" << "\n";
        in << R"({"ref":"R-2","topic":"ctax","citizen":{"name":"Bob Example"},"note":"short-lived"})" << "\n";
    }
    // Council tax contacts expire 10 s after they are collected; the sweep
    // runs often.
    auto config = dir.write("erase.toml", std::string(R"(
[node]
data_dir = "data"
[retention]
default = "3650d"
sweep_interval = "200ms"
[[retention.policy]]
category = "council_tax"
retention = "10s"
[destinations.revenues]
plugin = "zmq-feed"
[destinations.revenues.config]
endpoint = "tcp://127.0.0.1:*"
server_secret_key = "file:keys/server.key"
client_key_files = ["keys/revenues.pub"]
ack_timeout = "1s"
[destinations.waste]
plugin = "zmq-feed"
[destinations.waste.config]
endpoint = "tcp://127.0.0.1:*"
server_secret_key = "file:keys/server.key"
client_key_files = ["keys/revenues.pub"]
)") + kSource + kClassifyAndProfiles);
    const fs::path data = dir.path / "data", out = dir.path / "out";
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
    REQUIRE(daemon.wait_for_log("core: ready", 30s));
    auto client = feed(endpoint_of(daemon, "revenues"), keys, "revenues", dir.path / "state", out);

    std::vector<Line> got;
    bool arrived = wait_until([&] { return (got = read_out(out)).size() == 2; }, 30s, {&daemon, client.get()});
    INFO(daemon.err());
    INFO(client->err());
    REQUIRE(arrived);
    // Expiry: the erase notice comes over the feed, the client deletes the
    // lines and confirms; the confirmation is asked for again every 30 s by
    // the retention clock if it missed the first wait, so allow for that.
    bool erased = wait_until([&] { return line_count(out) == 0; }, 90s, {&daemon, client.get()});
    CHECK(erased);
    std::string audit;
    bool receipted = wait_until(
        [&] {
            audit = audit_text(data);
            for (const auto& l : got)
                if (audit.find("deleted 1 line(s) of record " + l.id) == std::string::npos) return false;
            return true;
        },
        90s, {&daemon, client.get()}, 200ms);
    INFO(audit);
    CHECK(receipted);
    for (const auto& l : got) CHECK(client->err().find(l.id) != std::string::npos); // its log names ids
    CHECK(audit.find("outcome=confirmed") != std::string::npos);
    CHECK(audit.find("instance=revenues") != std::string::npos);
    CHECK(audit.find("Ann Example") == std::string::npos);

    client->signal(SIGTERM);
    CHECK(client->wait(20s) == 0);
    daemon.signal(SIGTERM);
    CHECK(daemon.wait(30s) == 0);
}

TEST_CASE("zmq-feed client_key_files: a missing file, a line that is not a key, or a secret key file "
          "stops the daemon with the file named") {
    TempDir dir("sb-feed-keyfiles");
    const fs::path keys = dir.path / "keys";
    fs::create_directories(keys);
    keygen(keys, "server");
    keygen(keys, "revenues");
    dir.write("keys/bad.pub", "# the revenues client\nnot a key\n");
    dir.write("keys/empty.pub", "# nothing here\n\n");
    struct Case {
        std::string file, message;
    };
    for (const Case& c : {Case{"keys/missing.pub", "keys/missing.pub: cannot read it: No such file or directory"},
                          Case{"keys/bad.pub", "keys/bad.pub: line 2 is not a Z85 CURVE public key"},
                          Case{"keys/empty.pub", "keys/empty.pub holds no key"},
                          Case{"keys/revenues.key", "looks like a secret key file; list the department's .pub"}}) {
        INFO(c.file);
        auto config = dir.write("k.toml", R"(
[node]
data_dir = "data"
[destinations.revenues]
plugin = "zmq-feed"
[destinations.revenues.config]
endpoint = "tcp://127.0.0.1:*"
server_secret_key = "file:keys/server.key"
client_key_files = [")" + c.file + R"("]
[[route]]
category = "unclassified"
destination = "revenues"
purpose = "test"
profile = "p"
[profiles.p.fields]
"ref" = "keep"
)");
        Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                        sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
        auto code = daemon.wait(30s);
        INFO(daemon.err());
        REQUIRE(code);
        CHECK(*code == 1);
        CHECK(daemon.err().find("config key 'client_key_files'[0]: ") != std::string::npos);
        CHECK(daemon.err().find(c.message) != std::string::npos);
    }
}
