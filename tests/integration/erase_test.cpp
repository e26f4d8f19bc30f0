// Erasure on request (UK GDPR Art. 17) end to end, every part real: the
// daemon (subprocess) takes one person's contacts from four source systems
// (and another person's), delivers them to three departments over CURVE
// feeds whose `switchboard-feed` clients (subprocesses) write them to their
// --out directories; then `switchboard erase` (subprocess, beside the live
// node) erases the person by phone number: the records leave the store (the
// raw bytes of the data directory), every department client deletes its
// copies and sends its receipt, a department that is offline confirms when
// it comes back, a record under a legal hold is kept, and the other person's
// records are untouched. The audit trail tells the whole story and verifies.

#include "audit/audit_log.hpp"
#include "feed_e2e.hpp"
#include "process.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using sbtest::Process;
using sbtest::TempDir;
using namespace sbtest::feeds;
namespace fs = std::filesystem;

namespace {

// One contact: a reference the test follows, the query, the person and a
// canary (a value that must vanish from the store when the record is erased).
struct Contact {
    const char* source;
    const char* ref;
    const char* topic;
    const char* name;
    const char* phone;
};

// Jane Example (07700 900123) contacted the council through four systems;
// John Sample (07700 900456) through the same four. Each source writes its
// phone number in its own way.
const Contact kContacts[] = {
    {"verint", "V-J1", "ctax", "Jane Example", "07700 900123"},
    {"verint", "V-J2", "housing", "Jane Example", "+44 7700 900123"}, // held: a complaint
    {"qgenie", "Q-J1", "bins", "Jane Example", "07700900123"},
    {"landbot", "L-J1", "housing", "Jane Example", "+447700900123"},
    {"email", "E-J1", "ctax", "Jane Example", "(07700) 900 123"},
    {"verint", "V-S1", "ctax", "John Sample", "07700 900456"},
    {"qgenie", "Q-S1", "bins", "John Sample", "07700 900456"},
    {"landbot", "L-S1", "housing", "John Sample", "+447700900456"},
    {"email", "E-S1", "ctax", "John Sample", "07700 900456"},
};

std::string canary(const std::string& ref) { return "canary-" + ref + "-f3a9"; }

const char* kRoutes = R"(
[[classify.rule]]
category = "council_tax"
field = "topic"
equals = "ctax"
[[classify.rule]]
category = "missed_bin"
field = "topic"
equals = "bins"
[[classify.rule]]
category = "housing_repair"
field = "topic"
equals = "housing"
[[route]]
category = "council_tax"
destination = "revenues"
purpose = "answer the council tax query"
profile = "officer"
[[route]]
category = "missed_bin"
destination = "waste"
purpose = "arrange a return collection"
profile = "officer"
[[route]]
category = "housing_repair"
destination = "housing"
purpose = "arrange the repair"
profile = "officer"
[profiles.officer.fields]
"ref" = "keep"
"citizen.name" = "keep"
"note" = "keep"
)";

std::string source_block(const std::string& name) {
    return "[sources." + name + "]\nplugin = \"jsonl-source\"\npoll_interval = \"50ms\"\n[sources." + name +
           ".config]\npath = \"in/" + name + "\"\nformat = \"flat\"\n"
           "categories = [\"ref=reference.internal\", \"topic=classification.hint\", \"citizen.name=identity.name\", "
           "\"citizen.phone=contact.phone\", \"note=content.free_text\"]\n";
}

std::string feed_block(const std::string& name) {
    return "[destinations." + name + "]\nplugin = \"zmq-feed\"\n[destinations." + name +
           ".config]\nendpoint = \"tcp://127.0.0.1:*\"\nserver_secret_key = \"file:keys/server.key\"\n"
           "client_key_files = [\"keys/" + name + ".pub\"]\nack_timeout = \"1s\"\n";
}

// Every byte of every file under `dir`.
std::string raw_bytes(const fs::path& dir) {
    std::string out;
    for (const auto& e : fs::recursive_directory_iterator(dir))
        if (e.is_regular_file()) out += read_file(e.path());
    return out;
}

std::map<std::string, std::string> ids_by_ref(const fs::path& out) {
    std::map<std::string, std::string> m;
    for (const auto& l : read_out(out)) m[l.ref] = l.id;
    return m;
}

} // namespace

TEST_CASE("erase: a person's records from four sources, delivered to three departments, are erased everywhere "
          "with every department's receipt; a held record stays; no one else's is touched") {
    TempDir dir("sb-erase");
    const fs::path keys = dir.path / "keys", data = dir.path / "data", out = dir.path / "out",
                   state = dir.path / "state";
    fs::create_directories(keys);
    keygen(keys, "server");
    const std::vector<std::string> departments = {"revenues", "waste", "housing"};
    for (const auto& d : departments) keygen(keys, d);
    std::string config_text = "[node]\ndata_dir = \"data\"\n[retention]\nsweep_interval = \"200ms\"\n";
    for (const char* s : {"verint", "qgenie", "landbot", "email"}) {
        fs::create_directories(dir.path / "in" / s);
        config_text += source_block(s);
    }
    for (const auto& d : departments) config_text += feed_block(d);
    auto config = dir.write("erase.toml", config_text + kRoutes);
    for (const Contact& c : kContacts) {
        std::ofstream in(dir.path / "in" / c.source / "contacts.jsonl", std::ios::app);
        in << R"({"ref":")" << c.ref << R"(","topic":")" << c.topic << R"(","citizen":{"name":")" << c.name
           << R"(","phone":")" << c.phone << R"("},"note":")" << canary(c.ref) << "\"}\n";
    }

    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
    REQUIRE(daemon.wait_for_log("core: ready", 30s));
    std::map<std::string, std::string> endpoint;
    for (const auto& d : departments) endpoint[d] = endpoint_of(daemon, d);
    std::map<std::string, std::unique_ptr<Process>> client;
    for (const auto& d : departments) client[d] = feed(endpoint[d], keys, d, state / d, out / d);
    auto procs = [&] {
        std::vector<Process*> v{&daemon};
        for (auto& [d, p] : client) v.push_back(p.get());
        return v;
    };
    const std::map<std::string, std::size_t> expected = {{"revenues", 4}, {"waste", 2}, {"housing", 3}};
    bool delivered = wait_until(
        [&] {
            for (const auto& [d, n] : expected)
                if (line_count(out / d) < n) return false;
            return true;
        },
        60s, procs());
    INFO(daemon.err());
    REQUIRE(delivered);
    // The audit trail is written a moment after the commits it describes.
    bool audited = wait_until(
        [&] {
            // Deliveries audited: one entry each, or one per run of seqs
            // delivered together ("seqs=F-L").
            std::string a = audit_text(data);
            std::size_t n = 0;
            for (auto at = a.find("\tdeliver\t"); at != std::string::npos; at = a.find("\tdeliver\t", at + 1)) {
                const auto eol = a.find('\n', at);
                const auto runs = a.find(";seqs=", at);
                const auto from = runs + 6, to = a.find_first_of(";\t", from);
                std::uint64_t first = 0, last = 0;
                if (runs != std::string::npos && runs < eol &&
                    switchboard::audit::parse_seq_run(std::string_view(a).substr(from, to - from), first, last))
                    n += last - first + 1;
                else
                    ++n;
            }
            return n == 9;
        },
        20s, procs(), 100ms);
    REQUIRE(audited);
    std::map<std::string, std::string> id; // ref -> record id, from what the departments received
    for (const auto& d : departments)
        for (const auto& [ref, rid] : ids_by_ref(out / d)) id[ref] = rid;
    REQUIRE(id.size() == 9);

    // A complaint about the housing repair: that record is held.
    auto hold = sbtest::run({sbtest::switchboard_binary(), "hold", "-c", config.string(), "add", "--record",
                             id["V-J2"], "--reason", "complaint CMP-1182 about the repair", "--by", "R. Officer"},
                            20s);
    INFO(hold.err);
    REQUIRE(hold.code == 0);
    // Housing's client goes offline for a while.
    client["housing"]->signal(SIGTERM);
    REQUIRE(client["housing"]->wait(20s) == 0);

    // Usage errors get a clear answer and change nothing.
    auto no_by = sbtest::run({sbtest::switchboard_binary(), "erase", "-c", config.string(), "--phone", "07700900123"}, 20s);
    CHECK(no_by.code == 2);
    CHECK(no_by.err.find("--by NAME is required") != std::string::npos);
    auto name_only = sbtest::run({sbtest::switchboard_binary(), "erase", "-c", config.string(), "--name",
                                  "Jane Example", "--by", "DPO"}, 20s);
    CHECK(name_only.code == 2);
    auto dry = sbtest::run({sbtest::switchboard_binary(), "erase", "-c", config.string(), "--phone",
                            "07700 900 123", "--dry-run"}, 20s);
    INFO(dry.out << dry.err);
    CHECK(dry.code == 0);
    CHECK(dry.out.find("5 record(s) would be erased") != std::string::npos);
    CHECK(dry.out.find(id["V-J2"] + "  verint  housing_repair  sent to 1 department(s)  [held: not erased]") !=
          std::string::npos);

    // The erasure, by phone number in yet another form.
    auto erase = sbtest::run({sbtest::switchboard_binary(), "erase", "-c", config.string(), "--phone",
                              "0044 7700 900123", "--by", "Data Protection Officer", "--wait", "8s"},
                             60s);
    INFO(erase.out);
    INFO(erase.err);
    INFO(daemon.err());
    CHECK(erase.code == 3); // housing is offline: its receipt is outstanding
    CHECK(erase.out.find("erasure 1 placed for 5 record(s)") != std::string::npos);
    CHECK(erase.out.find(id["V-J2"] + "  held: kept by hold(s) 1") != std::string::npos);
    for (const char* ref : {"V-J1", "Q-J1", "L-J1", "E-J1"})
        CHECK(erase.out.find(id[ref] + "  erased from the store") != std::string::npos);
    CHECK(erase.out.find("revenues: confirmed") != std::string::npos);
    CHECK(erase.out.find("waste: confirmed") != std::string::npos);
    CHECK(erase.out.find("housing: outstanding") != std::string::npos);
    CHECK(erase.out.find("verint: confirmed") != std::string::npos); // the source's erase hook
    CHECK(erase.out.find("John") == std::string::npos);

    // The departments online deleted her records, and only hers.
    for (const auto& d : {"revenues", "waste"}) {
        bool gone = wait_until([&] { return line_count(out / d) == expected.at(d) - (d == std::string("revenues") ? 2 : 1); },
                               20s, procs());
        CHECK(gone);
    }
    {
        auto rev = ids_by_ref(out / "revenues");
        CHECK(rev.count("V-S1") == 1);
        CHECK(rev.count("E-S1") == 1);
        CHECK(rev.count("V-J1") == 0);
        CHECK(rev.count("E-J1") == 0);
        auto waste = ids_by_ref(out / "waste");
        CHECK(waste.count("Q-S1") == 1);
        CHECK(waste.count("Q-J1") == 0);
    }

    // Housing comes back: the notice is waiting, its client deletes and confirms.
    client["housing"] = feed(endpoint["housing"], keys, "housing", state / "housing", out / "housing");
    sbtest::Result status;
    bool complete = wait_until(
        [&] {
            status = sbtest::run({sbtest::switchboard_binary(), "erase", "-c", config.string(), "status", "1"}, 20s);
            return status.code == 0;
        },
        90s, procs(), 500ms);
    INFO(status.out);
    CHECK(complete);
    CHECK(status.out.find("complete") != std::string::npos);
    CHECK(status.out.find("housing: confirmed") != std::string::npos);
    CHECK(status.out.find("deleted 1 line(s) of record " + id["L-J1"]) != std::string::npos);
    {
        auto housing = ids_by_ref(out / "housing");
        CHECK(housing.count("L-J1") == 0);
        CHECK(housing.count("V-J2") == 1); // held
        CHECK(housing.count("L-S1") == 1);
    }
    auto json = sbtest::run({sbtest::switchboard_binary(), "erase", "-c", config.string(), "status", "1", "--json"}, 20s);
    CHECK(json.code == 0);
    CHECK(json.out.find("\"complete\": true") != std::string::npos);
    CHECK(json.out.find("\"steps_outstanding\": 0") != std::string::npos);

    for (auto& [d, p] : client) {
        p->signal(SIGTERM);
        CHECK(p->wait(20s) == 0);
    }
    daemon.signal(SIGTERM);
    CHECK(daemon.wait(30s) == 0);

    // The store: her erased records' values are gone from the raw bytes; the
    // held one and John's are there (so the scan can see values at all).
    std::string bytes = raw_bytes(data);
    for (const char* ref : {"V-J1", "Q-J1", "L-J1", "E-J1"}) CHECK(bytes.find(canary(ref)) == std::string::npos);
    CHECK(bytes.find(canary("V-J2")) != std::string::npos);
    for (const char* ref : {"V-S1", "Q-S1", "L-S1", "E-S1"}) CHECK(bytes.find(canary(ref)) != std::string::npos);

    // The audit trail: who asked, what was erased and held, every receipt; it verifies.
    std::string audit = audit_text(data);
    CHECK(audit.find("by=Data Protection Officer") != std::string::npos);
    CHECK(audit.find("outcome=held;holds=1") != std::string::npos);
    for (const auto& d : departments)
        for (const char* ref : {"V-J1", "Q-J1", "L-J1", "E-J1"}) {
            bool sent = (d == "revenues" && (ref[0] == 'V' || ref[0] == 'E')) || (d == "waste" && ref[0] == 'Q') ||
                        (d == "housing" && ref[0] == 'L');
            if (!sent) continue;
            INFO(d << " " << ref);
            CHECK(audit.find("deleted 1 line(s) of record " + id[ref]) != std::string::npos);
        }
    auto verify = sbtest::run({sbtest::switchboard_binary(), "audit", "verify", "-c", config.string()}, 30s);
    INFO(verify.out << verify.err);
    CHECK(verify.code == 0);
    // No personal data in any log or output.
    for (const std::string& text : {daemon.err(), erase.out, erase.err, status.out, audit}) {
        CHECK(text.find("Jane") == std::string::npos);
        CHECK(text.find("900123") == std::string::npos);
        CHECK(text.find("canary-") == std::string::npos);
    }
}
