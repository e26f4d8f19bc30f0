// qgenie through its built .so and the SDK harness, on the MODELLED Q Genie
// fixtures (CSV daily export, JSON visit records), plus the CSV reader and
// the Europe/London time conversion on their own.
#include "csv.hpp"
#include "london_time.hpp"

#include <catch2/catch.hpp>

#include <switchboard/testing.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using sb::testing::Harness;
using sb::testing::toml_string;

std::string env(const char* name) {
    const char* v = std::getenv(name);
    if (!v) FAIL(std::string(name) + " is not set (run through meson test)");
    return v;
}

std::string module() { return env("SB_PLUGIN_DIR") + "/sources/qgenie/qgenie.so"; }

std::string fixture(const std::string& name) {
    std::ifstream in(env("SB_FIXTURES") + "/queue/" + name, std::ios::binary);
    REQUIRE(in);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/sb-qgenie-XXXXXX";
        REQUIRE(::mkdtemp(tmpl));
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    void write(const std::string& name, const std::string& bytes) const {
        std::ofstream(path / name, std::ios::binary) << bytes;
    }
};

// A harness on `dir`, files read as soon as they appear.
std::unique_ptr<Harness> harness(const TempDir& dir) {
    auto h = std::make_unique<Harness>(module());
    h->config("dir", toml_string(dir.path.string())).config("settle", "\"0s\"");
    return h;
}

// Polls until the plugin reports nothing left to do.
void drain(Harness& h) {
    for (int k = 0; k < 100; ++k)
        if (h.poll() != SB_OK) return;
    FAIL("poll kept reporting progress");
}

const sb::testing::TestRecord& by_external_id(Harness& h, const std::string& id) {
    for (const auto& r : h.emitted())
        if (r.meta(SB_META_EXTERNAL_ID) == id) return r;
    FAIL("no record with external_id " + id);
    throw;
}

// Values of the fixtures that must never reach a log line.
const char* const kPersonal[] = {"Kowalczyk", "Agnieszka", "Pretend Row", "01514960271",
                                 "Payslips",  "Yusuf-Kelly", "07700900188", "example.org",
                                 "Fictional Parade", "L1 0AA", "L4 0XX", "Marcus",
                                 "Tenancy agreement", "single person discount", "degård"};

void no_personal_data_logged(Harness& h) {
    for (const char* v : kPersonal) {
        INFO(v);
        CHECK_FALSE(h.logged(v));
    }
    for (const auto& q : h.quarantined()) {
        for (const char* v : kPersonal) {
            INFO(q.reason);
            CHECK(q.reason.find(v) == std::string::npos);
        }
    }
}

} // namespace

// ---------------------------------------------------------------------------
// Europe/London local time

TEST_CASE("london time: GMT in winter, BST in summer, the offset written out") {
    auto t = qgenie::parse_london("08/01/2025 13:02");
    REQUIRE(t);
    CHECK(qgenie::to_rfc3339(*t) == "2025-01-08T13:02:00+00:00");
    CHECK(sb::detail::format_time(t->utc_ms) == "2025-01-08T13:02:00.000Z");
    t = qgenie::parse_london("15/07/2025 09:30:15");
    REQUIRE(t);
    CHECK(qgenie::to_rfc3339(*t) == "2025-07-15T09:30:15+01:00");
    CHECK(sb::detail::format_time(t->utc_ms) == "2025-07-15T08:30:15.000Z");
    t = qgenie::parse_london(" 1/2/2024 7:05 "); // one-digit parts, spaces around
    REQUIRE(t);
    CHECK(qgenie::to_rfc3339(*t) == "2024-02-01T07:05:00+00:00");
}

TEST_CASE("london time: the clock changes on the last Sundays of March and October at 01:00 UTC") {
    // 2025: 30 March and 26 October.
    CHECK(qgenie::last_sunday(2025, 3) == 30);
    CHECK(qgenie::last_sunday(2025, 10) == 26);
    CHECK(qgenie::last_sunday(2024, 3) == 31);
    CHECK(qgenie::last_sunday(2024, 10) == 27);
    auto rfc = [](const char* s) {
        auto t = qgenie::parse_london(s);
        REQUIRE(t);
        return qgenie::to_rfc3339(*t) + " " + sb::detail::format_time(t->utc_ms);
    };
    CHECK(rfc("30/03/2025 00:59") == "2025-03-30T00:59:00+00:00 2025-03-30T00:59:00.000Z");
    // The spring gap does not exist on a clock: read as GMT.
    CHECK(rfc("30/03/2025 01:30") == "2025-03-30T02:30:00+01:00 2025-03-30T01:30:00.000Z");
    CHECK(rfc("30/03/2025 02:00") == "2025-03-30T02:00:00+01:00 2025-03-30T01:00:00.000Z");
    CHECK(rfc("29/03/2025 23:00") == "2025-03-29T23:00:00+00:00 2025-03-29T23:00:00.000Z");
    // The autumn overlap happens twice: the first (BST) is taken.
    CHECK(rfc("26/10/2025 00:59") == "2025-10-26T00:59:00+01:00 2025-10-25T23:59:00.000Z");
    CHECK(rfc("26/10/2025 01:30") == "2025-10-26T01:30:00+01:00 2025-10-26T00:30:00.000Z");
    CHECK(rfc("26/10/2025 02:00") == "2025-10-26T02:00:00+00:00 2025-10-26T02:00:00.000Z");
    CHECK(rfc("27/10/2025 09:00") == "2025-10-27T09:00:00+00:00 2025-10-27T09:00:00.000Z");
}

TEST_CASE("london time: a date alone is a full-date; malformed and impossible values are refused") {
    auto t = qgenie::parse_london("08/07/2025");
    REQUIRE(t);
    CHECK(qgenie::to_rfc3339(*t) == "2025-07-08");
    CHECK(qgenie::to_rfc3339_instant(*t) == "2025-07-08T00:00:00+01:00");
    CHECK(qgenie::parse_london("29/02/2024"));
    for (const char* bad : {"29/02/2025", "31/04/2025", "00/01/2025", "01/13/2025", "08/01/25",
                            "08/01/2025 24:00", "08/01/2025 12:60", "08/01/2025 12:5",
                            "08/01/2025T12:00", "2025-01-08", "08-01-2025 12:00", "",
                            "08/01/2025 12:00:61", "08/01/2025 12:00 pm"}) {
        INFO(bad);
        CHECK_FALSE(qgenie::parse_london(bad));
    }
}

// ---------------------------------------------------------------------------
// RFC 4180 reader

TEST_CASE("csv: quotes, doubled quotes, line breaks in quotes, CRLF/LF/CR, empty fields") {
    std::string data = "a,\"b,c\",\"say \"\"hi\"\"\"\r\n"
                       "\"two\r\nlines\",,\"\"\n"
                       "\n"
                       "x,y\rlast,\"\"";
    qgenie::CsvReader r(data);
    qgenie::CsvRow row;
    using R = qgenie::CsvReader::Result;
    REQUIRE(r.next(row) == R::row);
    CHECK(row.fields == std::vector<std::string>{"a", "b,c", "say \"hi\""});
    CHECK(row.line == 1);
    REQUIRE(r.next(row) == R::row);
    CHECK(row.fields == std::vector<std::string>{"two\nlines", "", ""});
    CHECK(row.line == 2);
    CHECK(r.next(row) == R::blank);
    REQUIRE(r.next(row) == R::row);
    CHECK(row.line == 5);
    CHECK(row.fields == std::vector<std::string>{"x", "y"});
    REQUIRE(r.next(row) == R::row);
    CHECK(row.fields == std::vector<std::string>{"last", ""});
    CHECK(r.next(row) == R::end);
    // A trailing comma at the very end is a last, empty field.
    qgenie::CsvReader r2("a,");
    REQUIRE(r2.next(row) == R::row);
    CHECK(row.fields == std::vector<std::string>{"a", ""});
}

TEST_CASE("csv: malformed rows are refused with a reason and reading resumes at the next row") {
    std::string data = "ok,1\n"
                       "bad\"quote,2\n"
                       "\"closed\"junk,3\n"
                       "fine,4\n"
                       "\"never closed,5\nmore\n";
    qgenie::CsvReader r(data);
    qgenie::CsvRow row;
    using R = qgenie::CsvReader::Result;
    REQUIRE(r.next(row) == R::row);
    REQUIRE(r.next(row) == R::error);
    CHECK(std::string(r.error()) == "a double quote inside an unquoted field");
    CHECK(data.substr(row.begin, row.end - row.begin) == "bad\"quote,2\n");
    REQUIRE(r.next(row) == R::error);
    CHECK(std::string(r.error()) == "text after a closing double quote");
    REQUIRE(r.next(row) == R::row);
    CHECK(row.fields[0] == "fine");
    CHECK(row.line == 4);
    REQUIRE(r.next(row) == R::error);
    CHECK(std::string(r.error()) == "a quoted field is not closed before the end of the file");
    CHECK(row.end == data.size());
    CHECK(r.next(row) == R::end);
}

// ---------------------------------------------------------------------------
// The plugin

TEST_CASE("qgenie declares its categories and refuses bad config") {
    TempDir dir;
    Harness h(module());
    CHECK_THROWS_WITH(h.create(), Catch::Contains("dir"));
    Harness h2(module());
    h2.config("dir", toml_string(dir.path.string())).config("encoding", "\"latin-9\"");
    CHECK_THROWS(h2.create());
    Harness h3(module());
    h3.config("dir", toml_string(dir.path.string())).config("pattern", "[\"sub/*.csv\"]");
    CHECK(h3.create() != SB_OK);
    CHECK_THAT(h3.last_error(), Catch::Contains("pattern"));
}

TEST_CASE("the daily CSV export: BOM, CRLF, a line break and a comma in quotes, dd/mm/yyyy times") {
    TempDir dir;
    dir.write("qgenie_MODELLED_daily_export.csv", fixture("qgenie_MODELLED_daily_export.csv"));
    auto h = harness(dir);
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    REQUIRE(h->emitted().size() == 2);
    CHECK(h->quarantined().empty());

    const auto& a = by_external_id(*h, "QG-V-2025-000186");
    CHECK(a.meta(SB_META_CHANNEL) == "visit");
    CHECK(a.meta(SB_META_OCCURRED_AT) == "2025-01-08T13:02:00+00:00");
    CHECK(a.value("citizen.name") == "Kowalczyk, Agnieszka");
    CHECK(a.category("citizen.name") == "identity.name");
    CHECK(a.value("citizen.address.line1") == "Flat 9, 4 Pretend Row");
    CHECK(a.category("citizen.address.line1") == "contact.address");
    CHECK(a.value("citizen.address.postcode") == "L4 0XX");
    CHECK(a.category("citizen.address.postcode") == "contact.postcode");
    CHECK(a.value("contact.phone") == "01514960271");
    CHECK(a.category("contact.phone") == "contact.phone");
    CHECK(a.value("content.text") == "Payslips for new job\n(3 months)");
    CHECK(a.category("content.text") == "content.free_text");
    CHECK(a.value("hints.service") == "Housing Benefit");
    CHECK(a.category("hints.service") == "classification.hint");
    CHECK(a.value("visit.ticket") == "B019");
    CHECK(a.value("visit.branch") == "Central One Stop Shop");
    CHECK(a.value("visit.status") == "SERVED");
    CHECK(a.value("visit.issued_at") == "2025-01-08T13:02:00+00:00");
    CHECK(a.value("visit.called_at") == "2025-01-08T13:20:00+00:00");
    CHECK(a.value("visit.completed_at") == "2025-01-08T13:41:00+00:00");
    CHECK(a.category("visit.status") == "operational.visit");
    CHECK(a.value("evidence[0].receipt") == "R-OSS-0000920");
    CHECK(a.value("evidence[1].receipt") == "R-OSS-0000921");
    CHECK(a.category("evidence[1].receipt") == "reference.evidence");
    CHECK(a.value("vendor.visit_id") == "QG-V-2025-000186");
    CHECK(a.category("vendor.visit_id") == "vendor.id");

    // The cancelled ticket: empty columns are left out, not set empty.
    const auto& b = by_external_id(*h, "QG-V-2025-000187");
    CHECK(b.value("visit.status") == "CANCELLED");
    CHECK(b.value("hints.service") == "Bins & recycling");
    CHECK(b.meta(SB_META_OCCURRED_AT) == "2025-01-08T13:05:00+00:00");
    for (const char* absent : {"citizen.name", "citizen.address.line1", "contact.phone",
                               "content.text", "visit.called_at", "evidence[0].receipt"})
        CHECK_FALSE(b.has(absent));

    // Every field has a category the descriptor declares.
    for (const auto& r : h->emitted())
        for (const auto& f : r.fields()) CHECK(f.category != "unknown");
    // The file is remembered as done, the cursor at its end.
    CHECK(h->state().at("done").find("qgenie_MODELLED_daily_export.csv") != std::string::npos);
    CHECK(h->counter("visits_emitted") == 2);
    CHECK(h->counter("files_finished") == 1);
    no_personal_data_logged(*h);
    // Nothing more to read, also after a restart.
    CHECK(h->poll() == SB_IDLE);
    h->stop();
    h->destroy();
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    CHECK(h->poll() == SB_IDLE);
    CHECK(h->emitted().size() == 2);
}

TEST_CASE("a JSON visit record, served: every mapped key with its category") {
    TempDir dir;
    dir.write("visit-184.json", fixture("qgenie_MODELLED_visit_served.json"));
    auto h = harness(dir);
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    REQUIRE(h->emitted().size() == 1);
    const auto& r = h->emitted()[0];
    CHECK(r.meta(SB_META_EXTERNAL_ID) == "QG-V-2025-000184");
    CHECK(r.meta(SB_META_CHANNEL) == "visit");
    CHECK(r.meta(SB_META_OCCURRED_AT) == "2025-01-08T09:41:12+00:00");
    struct Expect {
        const char* path;
        const char* value;
        const char* category;
    };
    const Expect expect[] = {
        {"citizen.name", "Abdirahman Yusuf-Kelly", "identity.name"},
        {"citizen.address.line1", "Flat 3", "contact.address"},
        {"citizen.address.line2", "22 Fictional Parade", "contact.address"},
        {"citizen.address.town", "Liverpool", "contact.address"},
        {"citizen.address.postcode", "L1 0AA", "contact.postcode"},
        {"contact.phone", "07700900188", "contact.phone"},
        {"contact.email", "a.yusuf-kelly@example.org", "contact.email"},
        {"hints.service", "Council Tax - moving home", "classification.hint"},
        {"hints.service_id", "CTAX-COA", "classification.hint"},
        {"content.text",
         "Reporting a move in; brought tenancy agreement and proof of previous address",
         "content.free_text"},
        {"content.notes", "Customer asked for single person discount as well.", "content.free_text"},
        {"visit.ticket", "C042", "operational.visit"},
        {"visit.branch", "Central One Stop Shop", "operational.visit"},
        {"visit.branch_id", "OSS-CENTRAL", "operational.visit"},
        {"visit.service_point", "Desk 4", "operational.visit"},
        {"visit.service_point_id", "DESK-04", "operational.visit"},
        {"visit.status", "SERVED", "operational.visit"},
        {"visit.issued_at", "2025-01-08T09:41:12+00:00", "operational.visit"},
        {"visit.called_at", "2025-01-08T09:58:40+00:00", "operational.visit"},
        {"visit.served_at", "2025-01-08T09:59:05+00:00", "operational.visit"},
        {"visit.completed_at", "2025-01-08T10:16:33+00:00", "operational.visit"},
        {"agent.id", "S0192", "staff.id"},
        {"agent.name", "Marcus E.", "staff.name"},
        {"evidence[0].receipt", "R-OSS-0000912", "reference.evidence"},
        {"evidence[0].item", "Tenancy agreement (original) - scanned and returned",
         "reference.evidence"},
        {"evidence[0].handed_in", "2025-01-08T10:02:10+00:00", "reference.evidence"},
        {"evidence[0].returned", "true", "reference.evidence"},
        {"evidence[1].receipt", "R-OSS-0000913", "reference.evidence"},
        {"evidence[1].item", "Utility bill for previous address (copy retained)",
         "reference.evidence"},
        {"evidence[1].handed_in", "2025-01-08T10:03:55+00:00", "reference.evidence"},
        {"evidence[1].returned", "false", "reference.evidence"},
        {"vendor.visit_id", "QG-V-2025-000184", "vendor.id"},
    };
    for (const auto& e : expect) {
        INFO(e.path);
        CHECK(r.value(e.path) == e.value);
        CHECK(r.category(e.path) == e.category);
    }
    CHECK(r.field("evidence[1].returned")->type == SB_VALUE_BOOL);
    // The modelling note is known and not ingested; nothing else is unmapped.
    CHECK_FALSE(r.has("_note"));
    CHECK(h->counter("keys_unmapped") == 0);
    CHECK(r.size() == std::size(expect));
    no_personal_data_logged(*h);
}

TEST_CASE("a JSON visit record, no-show: the name only, no contact details") {
    TempDir dir;
    dir.write("visit-185.json", fixture("qgenie_MODELLED_visit_noshow_minimal.json"));
    auto h = harness(dir);
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    REQUIRE(h->emitted().size() == 1);
    const auto& r = h->emitted()[0];
    CHECK(r.meta(SB_META_EXTERNAL_ID) == "QG-V-2025-000185");
    CHECK(r.value("citizen.name") == "Zoë Ødegård-N'Diaye");
    CHECK(r.value("visit.status") == "NO_SHOW");
    CHECK(r.value("hints.service") == "Housing enquiries");
    CHECK(r.meta(SB_META_OCCURRED_AT) == "2025-01-08T11:05:00+00:00");
    for (const char* absent : {"contact.phone", "contact.email", "citizen.address.postcode",
                               "content.text", "agent.id", "evidence[0].receipt"})
        CHECK_FALSE(r.has(absent));
    CHECK_FALSE(h->logged("Zoë"));
}

TEST_CASE("the CSV cursor is committed with the visits: a restart resumes after the last commit") {
    TempDir dir;
    dir.write("export.csv", fixture("qgenie_MODELLED_daily_export.csv"));
    auto h = harness(dir);
    h->config("batch", "1");
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    CHECK(h->poll() == SB_OK);
    REQUIRE(h->emitted().size() == 1);
    CHECK(h->emitted()[0].meta(SB_META_EXTERNAL_ID) == "QG-V-2025-000186");
    CHECK(h->state().at("cursor").find(" export.csv") != std::string::npos);
    // The journal is down: nothing is committed, the position stays.
    h->journal_available(false);
    CHECK(h->poll() == SB_ERR_UNAVAILABLE);
    CHECK(h->counter("emit_unavailable") == 1);
    h->stop();
    h->destroy();
    h->journal_available(true);
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    REQUIRE(h->emitted().size() == 2); // the second once, the first not again
    CHECK(h->emitted()[1].meta(SB_META_EXTERNAL_ID) == "QG-V-2025-000187");
    CHECK(h->counter("visits_duplicate") == 0);
}

TEST_CASE("unusable rows are quarantined with their row number; the good ones are emitted") {
    TempDir dir;
    std::string csv =
        "\xEF\xBB\xBFVisitId,Ticket,Service,Status,Issued,CustomerName,Reason,Shoe size\r\n"
        "V-1,A001,Housing Benefit,SERVED,08/01/2025 09:00,Canary Oneperson,first,9\r\n"
        "V-2,A002,Housing Benefit,SERVED,31/02/2025 09:00,Canary Twoperson,bad date,9\r\n"
        "V-3,A003,Housing Benefit,SERVED\r\n"
        ",A004,Housing Benefit,SERVED,08/01/2025 09:10,Canary Fourperson,no id,9\r\n"
        "V-5,A005,Housing Benefit,SERVED,08/01/2025 09:15,Canary\"Fiveperson,quote,9\r\n"
        "\r\n"
        "V-6,A006,Housing Benefit,SERVED,08/01/2025 09:20,Canary \xC3\x28Six,bad utf-8,9\r\n"
        "V-7,A007,\"Council Tax\",SERVED,15/07/2025 10:00,\"Canary \"\"Seven\"\"\",\"multi\r\nline\",9\r\n"
        "V-8,A008,Housing Benefit,SERVED,08/01/2025 09:30,\"Canary Eightperson,never closed\r\n";
    dir.write("awkward.csv", csv);
    auto h = harness(dir);
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    REQUIRE(h->emitted().size() == 2);
    CHECK(h->emitted()[0].meta(SB_META_EXTERNAL_ID) == "V-1");
    const auto& seven = h->emitted()[1];
    CHECK(seven.meta(SB_META_EXTERNAL_ID) == "V-7");
    CHECK(seven.value("citizen.name") == "Canary \"Seven\"");
    CHECK(seven.value("content.text") == "multi\nline");
    CHECK(seven.meta(SB_META_OCCURRED_AT) == "2025-07-15T10:00:00+01:00");
    CHECK_FALSE(seven.has("Shoe_size"));

    auto& q = h->quarantined();
    REQUIRE(q.size() == 6);
    CHECK(q[0].reason == "row 2 (line 3): column Issued is not a dd/mm/yyyy [HH:MM] time");
    CHECK(q[0].ref == "awkward.csv row 2 (line 3)");
    CHECK(q[0].bytes.find("V-2,A002") == 0);
    CHECK(q[1].reason == "row 3 (line 4): 4 fields, the header has 8");
    CHECK(q[2].reason == "row 4 (line 5): column VisitId is missing or empty");
    CHECK(q[3].reason == "row 5 (line 6): a double quote inside an unquoted field");
    CHECK(q[4].reason.find("row 6 (line 8): column CustomerName is not valid UTF-8") == 0);
    CHECK(q[5].reason == "row 8 (line 11): a quoted field is not closed before the end of the file");
    CHECK(h->counter("visits_quarantined") == 6);
    CHECK(h->counter("columns_unmapped") == 1);
    CHECK(h->logged("Shoe size")); // a column name, so the mapping can be extended
    CHECK_FALSE(h->logged("Canary"));
    // The file is finished and remembered.
    CHECK(h->state().at("done").find("awkward.csv") != std::string::npos);
}

TEST_CASE("files that cannot be read at all are quarantined whole and remembered as done") {
    TempDir dir;
    dir.write("a-truncated.json", "{\"visit_id\": \"QG-1\", \"customer\": {\"name\": \"Canary Trunc");
    dir.write("b-noid.csv", "Ticket,CustomerName\r\nA1,Canary Noid\r\n");
    dir.write("c-empty.csv", "");
    dir.write("d-twice.csv", "VisitId,visitid\r\nQ,Q\r\n");
    dir.write("e-noid.json", "{\"ticket_number\": \"A1\", \"customer\": {\"name\": \"Canary Noid\"}}");
    auto h = harness(dir);
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    CHECK(h->emitted().empty());
    auto& q = h->quarantined();
    REQUIRE(q.size() == 5);
    CHECK(q[0].ref == "a-truncated.json");
    CHECK(q[0].reason.find("file: not valid JSON: ") == 0);
    CHECK(q[0].bytes.find("Canary Trunc") != std::string::npos);
    CHECK(q[1].reason == "file: the header has no VisitId column");
    CHECK(q[2].reason == "file: no header row");
    CHECK(q[3].reason == "file: column visitid appears twice in the header");
    CHECK(q[4].reason == "visit 1: key visit_id is missing or empty");
    CHECK_FALSE(h->logged("Canary"));
    for (const char* f : {"a-truncated.json", "b-noid.csv", "c-empty.csv", "d-twice.csv", "e-noid.json"})
        CHECK(h->state().at("done").find(f) != std::string::npos);
    CHECK(h->poll() == SB_IDLE);
}

TEST_CASE("a JSON file may hold an array of visits; phone numbers sent as numbers become text") {
    TempDir dir;
    dir.write("visits.json",
              "[{\"visit_id\": \"QG-A\", \"ticket_issued_at\": \"2025-06-01T10:00:00+01:00\","
              "  \"customer\": {\"name\": \"Canary A\", \"phone\": 447700900111}, \"flavour\": 1},"
              " 7,"
              " {\"visit_id\": \"QG-B\", \"status\": \"SERVED\"},"
              " {\"visit_id\": \"QG-C\", \"called_at\": \"yesterday\"}]");
    auto h = harness(dir);
    h->config("batch", "2");
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    REQUIRE(h->emitted().size() == 2);
    const auto& a = by_external_id(*h, "QG-A");
    CHECK(a.value("contact.phone") == "447700900111");
    CHECK(a.field("contact.phone")->type == SB_VALUE_STRING);
    CHECK(a.meta(SB_META_OCCURRED_AT) == "2025-06-01T10:00:00+01:00");
    const auto& b = by_external_id(*h, "QG-B");
    CHECK_FALSE(b.meta(SB_META_OCCURRED_AT)); // the host uses the time it received it
    REQUIRE(h->quarantined().size() == 2);
    CHECK(h->quarantined()[0].reason == "visit 2: array element is not an object");
    CHECK(h->quarantined()[1].reason == "visit 4: key called_at is not an RFC 3339 date-time");
    CHECK(h->logged("flavour"));
    CHECK(h->counter("keys_unmapped") == 1);
}

TEST_CASE("windows-1252 exports are converted; UTF-8 with a BOM is UTF-8 whatever the setting") {
    TempDir dir;
    dir.write("a.csv", "VisitId,CustomerName,Reason\r\nW-1,Zo\xEB M\xFCller,\x93quoted\x94 \x80" "5\r\n");
    dir.write("b.csv", "\xEF\xBB\xBFVisitId,CustomerName\r\nW-2,Zo\xC3\xAB\r\n");
    auto h = harness(dir);
    h->config("encoding", "\"windows-1252\"");
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    REQUIRE(h->emitted().size() == 2);
    CHECK(by_external_id(*h, "W-1").value("citizen.name") == "Zoë Müller");
    CHECK(by_external_id(*h, "W-1").value("content.text") == "\xE2\x80\x9Cquoted\xE2\x80\x9D \xE2\x82\xAC" "5");
    CHECK(by_external_id(*h, "W-2").value("citizen.name") == "Zoë");
}

TEST_CASE("files are read once settled; only matching names; dot files never") {
    TempDir dir;
    dir.write("export.csv", fixture("qgenie_MODELLED_daily_export.csv"));
    dir.write(".export.csv.part", fixture("qgenie_MODELLED_daily_export.csv"));
    dir.write("notes.txt", "VisitId\r\nX\r\n");
    auto h = std::make_unique<Harness>(module());
    h->config("dir", toml_string(dir.path.string())).config("settle", "\"1h\"");
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    CHECK(h->poll() == SB_IDLE); // just written: not settled
    h->stop();
    h->destroy();
    // Backdate it: settled now.
    struct timespec times[2] = {{0, UTIME_OMIT}, {::time(nullptr) - 7200, 0}};
    REQUIRE(::utimensat(AT_FDCWD, (dir.path / "export.csv").c_str(), times, 0) == 0);
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    CHECK(h->emitted().size() == 2);
    CHECK(h->state().at("done").find("notes.txt") == std::string::npos);
    CHECK(h->state().at("done").find(".export") == std::string::npos);
}

TEST_CASE("a file replaced under the same name is read again; redelivered visits are duplicates") {
    TempDir dir;
    dir.write("export.csv", fixture("qgenie_MODELLED_daily_export.csv"));
    auto h = harness(dir);
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    REQUIRE(h->emitted().size() == 2);
    // The vendor writes the export again with one more visit.
    std::string more = fixture("qgenie_MODELLED_daily_export.csv") +
                       "QG-V-2025-000188,B020,Central One Stop Shop,Housing Benefit,SERVED,"
                       "08/01/2025 14:00,,,,,,,,\r\n";
    fs::remove(dir.path / "export.csv");
    dir.write("export.csv", more);
    drain(*h);
    CHECK(h->emitted().size() == 3);
    CHECK(h->counter("visits_duplicate") == 2);
    // One entry per name: the new identity replaced the old one.
    const std::string& done = h->state().at("done");
    CHECK(done.find("export.csv") == done.rfind("export.csv"));
    // Deleted files are forgotten.
    fs::remove(dir.path / "export.csv");
    CHECK(h->poll() == SB_IDLE);
    CHECK(h->state().count("done") == 0);
}

TEST_CASE("delete_processed removes a file once every visit in it is committed") {
    TempDir dir;
    dir.write("export.csv", fixture("qgenie_MODELLED_daily_export.csv"));
    dir.write("broken.json", "{");
    auto h = harness(dir);
    h->config("delete_processed", "true");
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    CHECK(h->emitted().size() == 2);
    CHECK(h->quarantined().size() == 1);
    CHECK_FALSE(fs::exists(dir.path / "export.csv"));
    CHECK_FALSE(fs::exists(dir.path / "broken.json"));
    CHECK(h->counter("files_deleted") == 2);
}

TEST_CASE("an oversized file is quarantined (its head) and skipped") {
    TempDir dir;
    std::string big = "VisitId,Reason\r\n";
    while (big.size() < 3000) big += "V,Canary padding padding padding\r\n";
    dir.write("big.csv", big);
    auto h = harness(dir);
    h->config("max_file", "\"2KiB\"");
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    CHECK(h->emitted().empty());
    REQUIRE(h->quarantined().size() == 1);
    CHECK(h->quarantined()[0].reason.find("file: larger than max_file") == 0);
    CHECK(h->counter("files_oversized") == 1);
}

TEST_CASE("erase: SB_OK, the vendor's copy goes by the Q Genie retention setting") {
    TempDir dir;
    dir.write("visit.json", fixture("qgenie_MODELLED_visit_served.json"));
    auto h = harness(dir);
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    drain(*h);
    REQUIRE(h->emitted().size() == 1);
    CHECK(h->erase(h->emitted()[0]) == SB_OK);
    CHECK(h->counter("erase_requests") == 1);
    CHECK(h->counter("erase_by_vendor_retention") == 1);
    CHECK(h->logged("by the Q Genie retention setting"));
    no_personal_data_logged(*h);
}
