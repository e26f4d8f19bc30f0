// Subject access and legal holds with real parts: the pipeline in-process
// (SQLite journal, audit trail, memory plugins, delivery workers, retention
// with an injectable clock), and the real `switchboard sar` / `hold` /
// `retention` commands run as subprocesses on the same data directory, as an
// officer would run them beside a live node.

#include "audit/audit_log.hpp"
#include "config/config.hpp"
#include "governance/holds.hpp"
#include "governance/identifiers.hpp"
#include "governance/sar.hpp"
#include "http/server.hpp"
#include "pipeline/delivery.hpp"
#include "pipeline/journal.hpp"
#include "pipeline/policy.hpp"
#include "pipeline/retention.hpp"
#include "plugin/instance.hpp"
#include "plugin/registry.hpp"
#include "node.hpp"
#include "process.hpp"
#include "store/store.hpp"

#include <switchboard/detail/abi.hpp>

#include <catch2/catch.hpp>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

using namespace switchboard;
using namespace std::chrono_literals;
using sbtest::TempDir;

namespace {

constexpr std::int64_t kDay = 86'400'000;

std::int64_t real_now() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}


const char* kConfig = R"(
[sources.verint]
plugin = "memory-source"
[sources.verint.config]
count = 0
[sources.landbot]
plugin = "memory-source"
[sources.landbot.config]
count = 0
[sources.qgenie]
plugin = "memory-source"
[sources.qgenie.config]
count = 0
[sources.email]
plugin = "memory-source"
[sources.email.config]
count = 0
[destinations.revenues]
plugin = "memory-sink"
[destinations.housing]
plugin = "memory-sink"
[destinations.waste]
plugin = "memory-sink"
[[classify.rule]]
category = "council_tax"
field = "hints.topic"
equals = "ctax"
[[classify.rule]]
category = "housing"
field = "hints.topic"
equals = "housing"
[[classify.rule]]
category = "waste"
field = "hints.topic"
equals = "waste"
[[route]]
category = "council_tax"
destination = "revenues"
purpose = "council tax account changes"
profile = "dept"
[[route]]
category = "housing"
destination = "housing"
purpose = "housing repairs"
profile = "dept"
[[route]]
category = "waste"
destination = "waste"
purpose = "missed bin collections"
profile = "dept"
[profiles.dept.fields]
"citizen.name" = "keep"
"contact.phone" = "mask"
"content.text" = "redact"
[retention]
default = "28d"
)";

// A node assembled in-process, as the daemon assembles it (as in
// pipeline_test.cpp), its clock starting at the real time so that the CLI's
// dates and the node's agree.
struct Node : sbtest::Node {
    Node() : sbtest::Node(kConfig, real_now(), "sb-sar") {}

    // Emits one record (its own commit, so its own chunk); returns its id.
    std::string emit(const std::string& source, const std::vector<std::tuple<std::string, std::string, std::string>>& fields,
                     const std::string& external_id) {
        std::vector<std::unique_ptr<sb_record>> records;
        auto r = std::make_unique<sb_record>();
        for (const auto& [path, value, category] : fields) {
            sb_value v{SB_VALUE_STRING, value.data(), value.size(), 0, 0};
            REQUIRE(r->data.set(path, v, category.c_str()) == SB_OK);
        }
        REQUIRE(r->data.set_meta("external_id", external_id) == SB_OK);
        REQUIRE(r->data.set_meta("channel", "phone") == SB_OK);
        records.push_back(std::move(r));
        REQUIRE(sbtest::Node::emit(source, std::move(records))[0] == SB_OK);
        // The newest chunk holds it: "R<chunk>-0".
        auto chunks = store->chunks_expiring_before(INT64_MAX, 100000);
        std::int64_t newest = 0;
        for (const auto& c : chunks) newest = std::max(newest, c.id);
        return pipeline::record_id(newest, 0);
    }

    bool stored(const std::string& id) {
        std::int64_t chunk = 0;
        std::uint32_t index = 0;
        REQUIRE(pipeline::parse_record_id(id, chunk, index));
        return store->chunk_info(chunk).has_value();
    }

    sbtest::Result cli(std::vector<std::string> args) {
        args.insert(args.begin(), sbtest::switchboard_binary());
        return sbtest::run(args);
    }
};

// Jane Smith's four contacts (four sources, three departments) and three
// other people who share one identifier each with her, with canary values.
struct People {
    std::string jane_call, jane_chat, jane_visit, jane_email, bob, other_jane, neighbour;
    explicit People(Node& n) {
        jane_call = n.emit("verint", {{"call.ani", "+44 7700 900123", "contact.phone"},
                                      {"content.text", "my council tax bill", "content.free_text"},
                                      {"agent.name", "Canary-Agent-Officer", "staff.name"},
                                      {"hints.topic", "ctax", "classification.hint"}},
                           "call-1");
        jane_chat = n.emit("landbot", {{"citizen.name", "Jane Smith", "identity.name"},
                                       {"contact.phone", "07700900123", "contact.phone"},
                                       {"vendor.customer_id", "98765", "vendor.id"},
                                       {"content.text", "the boiler is broken", "content.free_text"},
                                       {"hints.topic", "housing", "classification.hint"}},
                           "chat-1");
        jane_visit = n.emit("qgenie", {{"citizen.name", "SMITH, Jane", "identity.name"},
                                       {"citizen.address.postcode", "ls14ab", "contact.postcode"},
                                       {"content.text", "bin not collected", "content.free_text"},
                                       {"hints.topic", "waste", "classification.hint"}},
                            "visit-1");
        jane_email = n.emit("email", {{"contact.email", "Jane.Smith@Example.org", "contact.email"},
                                      {"identifiers.nino", "qq 12 34 56 c", "identifier.nino"},
                                      {"content.text", "single person discount", "content.free_text"},
                                      {"hints.topic", "ctax", "classification.hint"}},
                            "mail-1");
        bob = n.emit("verint", {{"call.ani", "07700 900999", "contact.phone"},
                                {"citizen.name", "Canary-Bob", "identity.name"},
                                {"content.text", "Canary-Bob-Text", "content.free_text"},
                                {"hints.topic", "ctax", "classification.hint"}},
                     "call-2");
        other_jane = n.emit("qgenie", {{"citizen.name", "Jane Smith", "identity.name"},
                                       {"citizen.address.postcode", "LS2 9ZZ", "contact.postcode"},
                                       {"content.text", "Canary-OtherJane-Text", "content.free_text"},
                                       {"hints.topic", "waste", "classification.hint"}},
                            "visit-2");
        neighbour = n.emit("qgenie", {{"citizen.name", "Canary-Neighbour", "identity.name"},
                                      {"citizen.address.postcode", "LS1 4AB", "contact.postcode"},
                                      {"identifiers.nino", "QQ654321A", "identifier.nino"},
                                      {"hints.topic", "waste", "classification.hint"}},
                           "visit-3");
        n.wait_delivered("revenues", 3);
        n.wait_delivered("housing", 1);
        n.wait_delivered("waste", 3);
        n.journal->flush_audit();
    }
};

std::set<std::string> ids(const governance::SarResult& r) {
    std::set<std::string> out;
    for (const auto& f : r.records) out.insert(f.id);
    return out;
}

governance::SarResult find(Node& n, governance::SubjectQuery q) {
    std::string error;
    INFO(error);
    REQUIRE(q.normalise(error));
    return governance::find_subject(*n.store, q, n.data() / "audit", n.now);
}

} // namespace

TEST_CASE("sar: identifiers are normalised: phone, NINO, postcode, e-mail forms") {
    using namespace governance;
    for (const char* p : {"07700 900123", "07700900123", "+44 7700 900123", "+44 (0)7700 900123", "0044 7700-900-123",
                          "447700900123", "(07700) 900 123"})
        CHECK(normal_phone(p) == "07700900123");
    CHECK(normal_phone("+33 1 23 45 67 89") == "+33123456789");
    CHECK(normal_phone("call me") == "");
    CHECK(normal_phone("123") == "");
    CHECK(normal_nino("qq 12 34 56 c") == "QQ123456C");
    CHECK(normal_nino("QQ123456") == "QQ123456");
    CHECK(normal_nino("QQ12345") == "");
    CHECK(normal_nino("QQ123456Z") == "");
    CHECK(nino_matches("QQ123456C", "QQ123456"));
    CHECK(nino_matches("QQ123456C", "QQ123456A")); // the suffix does not tell people apart
    CHECK_FALSE(nino_matches("QQ123456C", "QQ123457C"));
    CHECK(normal_postcode("ls1 4ab") == "LS14AB");
    CHECK(normal_postcode(" LS14AB ") == "LS14AB");
    CHECK(normal_postcode("LS1") == "");
    CHECK(normal_email(" Jane.Smith@Example.ORG ") == "jane.smith@example.org");
    CHECK(normal_email("not an email") == "");

    SubjectQuery weak;
    weak.name = "Jane Smith";
    std::string error;
    CHECK_FALSE(weak.normalise(error));
    CHECK(error.find("name or a postcode alone") != std::string::npos);
    SubjectQuery bad;
    bad.phone = "ring me";
    CHECK_FALSE(bad.normalise(error));
    CHECK(error.find("--phone") != std::string::npos);
}

TEST_CASE("sar: every record of the person by any identifier in any format, and no one else's") {
    Node n;
    People p(n);

    for (const char* phone : {"07700 900123", "+447700900123", "0044 7700 900 123", "+44 (0)7700-900123"}) {
        governance::SubjectQuery q;
        q.phone = phone;
        INFO(phone);
        CHECK(ids(find(n, q)) == std::set<std::string>{p.jane_call, p.jane_chat});
    }
    for (const char* nino : {"QQ123456C", "qq 123456 c", "QQ 12 34 56", "QQ123456A"}) {
        governance::SubjectQuery q;
        q.nino = nino;
        INFO(nino);
        CHECK(ids(find(n, q)) == std::set<std::string>{p.jane_email});
    }
    for (const char* pc : {"LS1 4AB", "ls14ab", " Ls1  4aB"}) {
        governance::SubjectQuery q; // name + postcode: not the other Jane Smith, not the neighbour
        q.name = "jane smith";
        q.postcode = pc;
        INFO(pc);
        CHECK(ids(find(n, q)) == std::set<std::string>{p.jane_visit});
    }
    {
        governance::SubjectQuery q;
        q.landbot_id = "98765";
        CHECK(ids(find(n, q)) == std::set<std::string>{p.jane_chat});
        q = {};
        q.email = "JANE.SMITH@example.org";
        CHECK(ids(find(n, q)) == std::set<std::string>{p.jane_email});
    }

    // The CLI, beside the running node: everything, as JSON and HTML.
    TempDir out("sb-sar-out");
    auto r = n.cli({"sar", "-c", n.config_file.string(), "--phone", "+44 7700 900 123", "--email",
                    "jane.smith@example.org", "--nino", "qq123456c", "--name", "Jane Smith", "--postcode", "ls1 4ab",
                    "--landbot-id", "98765", "--out", out.path.string()});
    INFO(r.out << r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("4 record(s) found") != std::string::npos);
    std::filesystem::path json, html;
    for (auto& e : std::filesystem::directory_iterator(out.path)) {
        if (e.path().extension() == ".json") json = e.path();
        if (e.path().extension() == ".html") html = e.path();
        CHECK((std::filesystem::status(e.path()).permissions() & std::filesystem::perms::others_read) ==
              std::filesystem::perms::none);
    }
    REQUIRE(!json.empty());
    REQUIRE(!html.empty());
    std::string bundle = sbtest::read_file(json), page = sbtest::read_file(html);
    for (const auto& id : {p.jane_call, p.jane_chat, p.jane_visit, p.jane_email}) {
        CHECK(bundle.find("\"" + id + "\"") != std::string::npos);
        CHECK(page.find(id) != std::string::npos);
    }
    for (const auto& id : {p.bob, p.other_jane, p.neighbour}) {
        CHECK(bundle.find("\"" + id + "\"") == std::string::npos);
    }
    for (const char* canary : {"Canary-", "07700 900999", "LS2 9ZZ", "QQ654321A"}) {
        INFO(canary);
        CHECK(bundle.find(canary) == std::string::npos);
        CHECK(page.find(canary) == std::string::npos);
    }
    // Her data, the sources, the departments with fields, purposes and times, the expiry.
    for (const char* want : {"the boiler is broken", "single person discount", "\"source\": \"landbot\"",
                             "\"source\": \"qgenie\"", "\"department\": \"revenues\"", "\"department\": \"housing\"",
                             "\"department\": \"waste\"", "council tax account changes", "\"path\": \"contact.phone\", \"as\": \"mask\"",
                             "\"delivered_at\": \"20", "\"expires_at\": \"20", "agent.name"})
        CHECK(bundle.find(want) != std::string::npos);
    CHECK(page.find("housing repairs") != std::string::npos);
    CHECK(page.find("the boiler is broken") != std::string::npos);
}

TEST_CASE("hold: a held record survives its expiry until the hold ends, then is deleted; all of it is audited") {
    Node n;
    People p(n);

    // sar --hold through the CLI, as the DPO would.
    TempDir out("sb-sar-out");
    auto r = n.cli({"sar", "-c", n.config_file.string(), "--phone", "07700900123", "--out", out.path.string(),
                    "--hold", "--by", "dpo.jones"});
    INFO(r.out << r.err);
    REQUIRE(r.code == 0);
    auto at = r.out.find("SAR-");
    REQUIRE(at != std::string::npos);
    std::string sar = r.out.substr(at, r.out.find(':', at) - at);

    // And a dated hold on Bob's record (a complaint), ending 30 days on.
    std::string until_date = sb::detail::format_time(n.now + 30 * kDay).substr(0, 10);
    r = n.cli({"hold", "-c", n.config_file.string(), "add", "--record", p.bob, "--reason", "complaint C-17",
               "--by", "ig.officer", "--until", until_date});
    INFO(r.out << r.err);
    REQUIRE(r.code == 0);

    r = n.cli({"hold", "-c", n.config_file.string(), "list"});
    REQUIRE(r.code == 0);
    CHECK(r.out.find("subject access request " + sar) != std::string::npos);
    CHECK(r.out.find("set by dpo.jones") != std::string::npos);
    CHECK(r.out.find("complaint C-17") != std::string::npos);
    CHECK(r.out.find("until " + sb::detail::format_time(*governance::parse_until(until_date))) != std::string::npos);
    CHECK(r.out.find("2 hold(s), 2 in force") != std::string::npos);

    // Bad input gets a clear answer.
    r = n.cli({"hold", "-c", n.config_file.string(), "add", "--record", "R999-0", "--reason", "x", "--by", "y"});
    CHECK(r.code == 1);
    CHECK(r.err.find("no record R999-0") != std::string::npos);
    r = n.cli({"hold", "-c", n.config_file.string(), "add", "--record", p.bob, "--by", "y"});
    CHECK(r.code == 2);

    // Day 29: everything expired; the held records stay, the rest go.
    n.now += 29 * kDay;
    r = n.cli({"retention", "-c", n.config_file.string(), "--dry-run"});
    CHECK(r.out.find("held") != std::string::npos);
    CHECK(n.retention->sweep(n.now) == 4); // found by phone: the call and the chat are held
    for (const auto& id : {p.jane_call, p.jane_chat, p.bob}) CHECK(n.stored(id));
    for (const auto& id : {p.jane_visit, p.jane_email, p.other_jane, p.neighbour}) CHECK_FALSE(n.stored(id));
    r = n.cli({"retention", "-c", n.config_file.string(), "--pending"});
    CHECK(r.out.find("3 record(s) kept by holds") != std::string::npos);

    // Day 31: Bob's hold ran out by itself.
    n.now += 2 * kDay;
    CHECK(n.retention->sweep(n.now) == 1);
    CHECK_FALSE(n.stored(p.bob));
    CHECK(n.stored(p.jane_call));

    // The request is closed: her records go at the next sweep.
    r = n.cli({"sar", "-c", n.config_file.string(), "close", sar, "--by", "dpo.jones"});
    INFO(r.out << r.err);
    REQUIRE(r.code == 0);
    r = n.cli({"sar", "-c", n.config_file.string(), "close", sar, "--by", "dpo.jones"});
    CHECK(r.code == 1); // nothing left to close
    CHECK(n.retention->sweep(n.now) == 2);
    CHECK_FALSE(n.stored(p.jane_call));
    CHECK_FALSE(n.stored(p.jane_chat));

    n.journal->flush_audit();
    auto lines = sbtest::audit_lines(n.data());
    auto count = [&](const std::string& id, const std::string& what) {
        std::size_t k = 0;
        for (const auto& l : lines)
            if (l.find("\thold\t" + id + "\t") != std::string::npos && l.find(what) != std::string::npos) ++k;
        return k;
    };
    CHECK(count(p.jane_call, "action=set;hold=1;by=dpo.jones") == 1);
    CHECK(count(p.jane_call, "sar=" + sar) == 1);
    CHECK(count(p.jane_call, "action=ended;hold=1;by=dpo.jones") == 1);
    CHECK(count(p.jane_chat, "action=ended") == 1);
    CHECK(count(p.bob, "action=set;hold=2;by=ig.officer") == 1);
    CHECK(count(p.bob, "action=expired;hold=2;by=expiry") == 1);
    for (const auto& l : lines) CHECK(l.find("complaint C-17") == std::string::npos); // reasons stay out
    std::size_t expired = 0;
    for (const auto& l : lines)
        if (l.find("\texpire\t" + p.jane_call + "\t") != std::string::npos) ++expired;
    CHECK(expired == 1);
    CHECK(audit::AuditLog::verify(n.data() / "audit").ok);

    r = n.cli({"hold", "-c", n.config_file.string(), "list"});
    CHECK(r.out.find("ended") != std::string::npos);
    CHECK(r.out.find("expired") != std::string::npos);
    CHECK(r.out.find("0 in force") != std::string::npos);

    // Settled: a sweep has nothing to commit. 28 days after they ended, the
    // holds (and their free-text reasons) are forgotten; the trail keeps them.
    CHECK_FALSE(n.store->holds_to_settle(n.now, n.now - governance::kEndedHoldKeptMs));
    n.now += 29 * kDay;
    n.retention->sweep(n.now);
    r = n.cli({"hold", "-c", n.config_file.string(), "list"});
    CHECK(r.out == "no holds\n");
}

TEST_CASE("hold: a journal made before holds existed gains the tables when opened") {
    TempDir dir("sb-hold-migrate");
    auto file = (dir.path / "journal.db").string();
    {
        auto s = store::open_sqlite(file);
        s->write([](store::Txn& t) { t.set_meta("x", "1"); });
    }
    // Drop the tables, as a journal made by an earlier version lacks them.
    {
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
        REQUIRE(sqlite3_exec(db, "DROP TABLE hold_records; DROP TABLE holds;", nullptr, nullptr, nullptr) == SQLITE_OK);
        sqlite3_close(db);
    }
    auto s = store::open_sqlite(file);
    CHECK(s->holds(std::nullopt).empty());
    CHECK(s->expired_chunks(INT64_MAX, 10).empty());
}

// Not run by default (hidden tag): `sar_test "[.bench]"` measures the scan.
TEST_CASE("sar: cost of the scan", "[.bench]") {
    Node n;
    constexpr int kRecords = 200'000;
    for (int b = 0; b < kRecords / 1000; ++b) {
        std::vector<std::unique_ptr<sb_record>> records;
        for (int i = 0; i < 1000; ++i) {
            auto r = std::make_unique<sb_record>();
            std::string phone = "0770090" + std::to_string(1000 + (b * 1000 + i) % 9000);
            std::string name = "Person " + std::to_string(b * 1000 + i);
            sb_value v{SB_VALUE_STRING, phone.data(), phone.size(), 0, 0};
            sb_value w{SB_VALUE_STRING, name.data(), name.size(), 0, 0};
            std::string text = "a message of some length about council tax and bins " + std::to_string(i);
            sb_value t{SB_VALUE_STRING, text.data(), text.size(), 0, 0};
            REQUIRE(r->data.set("contact.phone", v, "contact.phone") == SB_OK);
            REQUIRE(r->data.set("citizen.name", w, "identity.name") == SB_OK);
            REQUIRE(r->data.set("content.text", t, "content.free_text") == SB_OK);
            records.push_back(std::move(r));
        }
        std::vector<sb_status> results(records.size());
        std::string error;
        REQUIRE(n.journal->emit("verint", records, nullptr, nullptr, results.data(), error) == SB_OK);
    }
    governance::SubjectQuery q;
    q.phone = "07700 901234";
    auto started = std::chrono::steady_clock::now();
    auto r = find(n, q);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    WARN("scanned " << r.records_scanned << " records in " << r.chunks_scanned << " chunks: " << s << " s, found "
                    << r.records.size());
    CHECK(r.records_scanned == kRecords);
}
