// qgenie end to end: the real daemon as a subprocess watching a real drop
// directory, every MODELLED Q Genie fixture dropped into it, the records
// read back from a memory-sink destination's output file, bad files found
// in the quarantine (the audit trail), and no value in the daemon's log.
#include "process.hpp"
#include "sink_records.hpp"

#include <switchboard/detail/json_record.hpp>

#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using sbtest::Process;
using sbtest::TempDir;

namespace {

using sbtest::wait_until;

namespace fs = std::filesystem;


std::string fixture(const std::string& name) {
    return sbtest::read_file(fs::path(sbtest::env_or_fail("SB_FIXTURES")) / "queue" / name);
}

using sbtest::Leaves;
using sbtest::sink_records;

const Leaves* by_visit(const std::vector<Leaves>& records, const std::string& visit_id) {
    for (const auto& r : records) {
        auto it = r.find("fields.vendor.visit_id");
        if (it != r.end() && it->second == visit_id) return &r;
    }
    return nullptr;
}



// The fixtures are dated January 2025: the source keeps its records ten
// years so that the core does not refuse them as already expired.
std::string config_text(bool delete_processed) {
    return std::string(R"(
[node]
data_dir = "data"
[sources.oss]
plugin = "qgenie"
poll_interval = "50ms"
retention = "3650d"
[sources.oss.config]
dir = "drop"
settle = "0s"
delete_processed = )") + (delete_processed ? "true" : "false") + R"(
[destinations.sink]
plugin = "memory-sink"
[destinations.sink.config]
output = "sink.jsonl"
[[route]]
category = ["*", "unclassified"]
destination = "sink"
purpose = "end-to-end test"
profile = "all"
lawful_basis = "test"
[profiles.all.fields]
"*" = "keep"
)";
}

std::unique_ptr<Process> start_daemon(const fs::path& config) {
    auto p = std::make_unique<Process>(std::vector<std::string>{
        sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
        sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
    auto ready = p->wait_for_log("core: ready", 20s);
    INFO(p->err());
    REQUIRE(ready);
    return p;
}

void stop_daemon(Process& p) {
    p.signal(SIGTERM);
    auto code = p.wait(20s);
    INFO(p.err());
    CHECK(code == 0);
}

const char* const kPersonal[] = {"Kowalczyk", "Agnieszka", "Pretend Row", "01514960271",
                                 "Payslips",  "Yusuf-Kelly", "07700900188", "example.org",
                                 "Fictional Parade", "L1 0AA", "L4 0XX", "Marcus", "Tenancy",
                                 "single person discount", "Ødegård", "Canary"};

} // namespace

TEST_CASE("qgenie e2e: every fixture dropped into the directory arrives as the expected record; "
          "bad files are quarantined; nothing personal is logged") {
    TempDir dir;
    fs::create_directories(dir.path / "drop");
    auto config = dir.write("qgenie.toml", config_text(false));
    auto daemon = start_daemon(config);

    // Dropped as the vendor should: written aside, then renamed into place.
    auto drop = [&](const std::string& name, const std::string& bytes) {
        dir.write("drop/." + name + ".part", bytes);
        fs::rename(dir.path / "drop" / ("." + name + ".part"), dir.path / "drop" / name);
    };
    drop("qgenie_MODELLED_daily_export.csv", fixture("qgenie_MODELLED_daily_export.csv"));
    drop("qgenie_MODELLED_visit_served.json", fixture("qgenie_MODELLED_visit_served.json"));
    drop("qgenie_MODELLED_visit_noshow_minimal.json",
         fixture("qgenie_MODELLED_visit_noshow_minimal.json"));
    // Not fixtures: a truncated JSON visit and a CSV with one bad row.
    drop("truncated.json", "{\"visit_id\": \"QG-X\", \"customer\": {\"name\": \"Canary Trunc");
    drop("badrow.csv", "VisitId,Issued,CustomerName\r\nQG-Y,32/01/2025 10:00,Canary Badrow\r\n");

    fs::path sink = dir.path / "sink.jsonl";
    fs::path data = dir.path / "data";
    REQUIRE(wait_until([&] { return sink_records(sink).size() >= 4; }));
    REQUIRE(wait_until([&] { return sbtest::count_of(sbtest::audit_text(data), "\tquarantine\t") >= 2; }));
    stop_daemon(*daemon);

    auto records = sink_records(sink);
    CHECK(records.size() == 4);

    // CSV: the quoted comma, the line break inside quotes, the receipts, the dates.
    const Leaves* served_csv = by_visit(records, "QG-V-2025-000186");
    REQUIRE(served_csv);
    const Leaves& a = *served_csv;
    CHECK(a.at("fields.citizen.name") == "Kowalczyk, Agnieszka");
    CHECK(a.at("fields.citizen.address.line1") == "Flat 9, 4 Pretend Row");
    CHECK(a.at("fields.citizen.address.postcode") == "L4 0XX");
    CHECK(a.at("fields.contact.phone") == "01514960271");
    CHECK(a.at("fields.content.text") == "Payslips for new job\n(3 months)");
    CHECK(a.at("fields.hints.service") == "Housing Benefit");
    CHECK(a.at("fields.visit.issued_at") == "2025-01-08T13:02:00+00:00");
    CHECK(a.at("fields.visit.completed_at") == "2025-01-08T13:41:00+00:00");
    CHECK(a.at("fields.evidence[0].receipt") == "R-OSS-0000920");
    CHECK(a.at("fields.evidence[1].receipt") == "R-OSS-0000921");
    CHECK(a.at("meta.channel") == "visit");
    CHECK(a.at("meta.occurred_at") == "2025-01-08T13:02:00+00:00");

    const Leaves* cancelled = by_visit(records, "QG-V-2025-000187");
    REQUIRE(cancelled);
    CHECK(cancelled->at("fields.visit.status") == "CANCELLED");
    CHECK(cancelled->count("fields.citizen.name") == 0);

    // JSON served: contact details, staff, receipts with items and times.
    const Leaves* served = by_visit(records, "QG-V-2025-000184");
    REQUIRE(served);
    CHECK(served->at("fields.citizen.name") == "Abdirahman Yusuf-Kelly");
    CHECK(served->at("fields.citizen.address.postcode") == "L1 0AA");
    CHECK(served->at("fields.contact.email") == "a.yusuf-kelly@example.org");
    CHECK(served->at("fields.hints.service") == "Council Tax - moving home");
    CHECK(served->at("fields.agent.name") == "Marcus E.");
    CHECK(served->at("fields.visit.status") == "SERVED");
    CHECK(served->at("fields.evidence[1].receipt") == "R-OSS-0000913");
    CHECK(served->at("fields.evidence[1].returned") == "false");
    CHECK(served->at("fields.evidence[0].handed_in") == "2025-01-08T10:02:10+00:00");
    CHECK(served->at("meta.occurred_at") == "2025-01-08T09:41:12+00:00");

    // JSON no-show: the name only.
    const Leaves* noshow = by_visit(records, "QG-V-2025-000185");
    REQUIRE(noshow);
    CHECK(noshow->at("fields.citizen.name") == "Zoë Ødegård-N'Diaye");
    CHECK(noshow->at("fields.visit.status") == "NO_SHOW");
    CHECK(noshow->count("fields.contact.phone") == 0);
    CHECK(noshow->count("fields.contact.email") == 0);

    // The two bad files are in the quarantine (one audit entry each, ids only).
    std::string audit = sbtest::audit_text(data);
    CHECK(sbtest::count_of(audit, "\tquarantine\t") == 2);
    CHECK(sbtest::count_of(audit, "instance=oss;ref=truncated.json") == 1);
    CHECK(sbtest::count_of(audit, "instance=oss;ref=badrow.csv") == 1);
    CHECK(sbtest::count_of(audit, "\tingest\t") == 4);
    for (const char* v : kPersonal) {
        INFO(v);
        CHECK(daemon->err().find(v) == std::string::npos);
        CHECK(daemon->out().find(v) == std::string::npos);
        CHECK(audit.find(v) == std::string::npos);
    }
    // The log says what happened, by file and row.
    CHECK(daemon->err().find("plugin[oss]: quarantined badrow.csv row 1 (line 2): column Issued") !=
          std::string::npos);
    CHECK(daemon->err().find("plugin[oss]: quarantined truncated.json: not valid JSON") !=
          std::string::npos);
}

TEST_CASE("qgenie e2e: a restart reads nothing twice; new files are picked up; "
          "delete_processed removes what was read") {
    TempDir dir;
    fs::create_directories(dir.path / "drop");
    auto config = dir.write("qgenie.toml", config_text(true));
    dir.write("drop/export.csv", fixture("qgenie_MODELLED_daily_export.csv"));
    fs::path sink = dir.path / "sink.jsonl";
    {
        auto daemon = start_daemon(config);
        REQUIRE(wait_until([&] { return sink_records(sink).size() >= 2; }));
        REQUIRE(wait_until([&] { return !fs::exists(dir.path / "drop/export.csv"); }));
        stop_daemon(*daemon);
    }
    {
        auto daemon = start_daemon(config);
        // Written aside and renamed into place, as a vendor should: with
        // settle = 0s a file written in place may be read while still empty
        // (and quarantined as malformed), which a busy machine showed.
        dir.write("drop/.visit.json.part", fixture("qgenie_MODELLED_visit_served.json"));
        fs::rename(dir.path / "drop/.visit.json.part", dir.path / "drop/visit.json");
        REQUIRE(wait_until([&] { return sink_records(sink).size() >= 3; }));
        REQUIRE(wait_until([&] { return !fs::exists(dir.path / "drop/visit.json"); }));
        std::this_thread::sleep_for(300ms); // time enough for a wrong re-read to show
        stop_daemon(*daemon);
        CHECK(daemon->err().find("deleted visit.json (delete_processed)") != std::string::npos);
    }
    auto records = sink_records(sink);
    CHECK(records.size() == 3);
    CHECK(by_visit(records, "QG-V-2025-000186"));
    CHECK(by_visit(records, "QG-V-2025-000187"));
    CHECK(by_visit(records, "QG-V-2025-000184"));
}
