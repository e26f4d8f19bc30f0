// Subject access and legal holds through the admin API, on a running daemon
// (a real subprocess, real HTTP on loopback), its records fed by a jsonl
// source: the person's records and no one else's, holds placed, listed (by
// the API and by `switchboard hold list`), audited by the node at its sweep
// and ended; bad bodies answered with the field named; read-only tokens
// refused; every call in the audit trail with the token's name.

#include "http_call.hpp"
#include "process.hpp"

#include <switchboard/detail/abi.hpp>

#include <catch2/catch.hpp>

#include <signal.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

using namespace std::chrono_literals;
using sbtest::Process;
using sbtest::TempDir;

namespace {

const std::string kDpoToken = "dpo-token-0123456789abcdef";
const std::string kReaderToken = "reader-token-fedcba9876543210";
const std::vector<std::string> kEnv = {"SB_TEST_ADMIN_DPO=" + kDpoToken, "SB_TEST_ADMIN_READER=" + kReaderToken};

using sbtest::Http;

// Jane Smith's three contacts, and three other people who each share one
// identifier with her, with canary values that must not reach her bundle.
const char* kLines[] = {
    R"({"meta": {"channel": "phone", "external_id": "jane-call"},
        "fields": {"call": {"ani": "+44 7700 900123"}, "content": {"text": "my council tax bill"}},
        "categories": {"call.ani": "contact.phone", "content.text": "content.free_text"}})",
    R"({"meta": {"channel": "web_chat", "external_id": "jane-chat"},
        "fields": {"citizen": {"name": "Jane Smith"}, "contact": {"phone": "07700900123"},
                   "vendor": {"customer_id": "98765"}, "content": {"text": "the boiler is broken"}},
        "categories": {"citizen.name": "identity.name", "contact.phone": "contact.phone",
                       "vendor.customer_id": "vendor.id", "content.text": "content.free_text"}})",
    R"({"meta": {"channel": "visit", "external_id": "jane-visit"},
        "fields": {"citizen": {"name": "SMITH, Jane", "address": {"postcode": "ls14ab"}},
                   "content": {"text": "bin not collected"}},
        "categories": {"citizen.name": "identity.name", "citizen.address.postcode": "contact.postcode",
                       "content.text": "content.free_text"}})",
    R"({"meta": {"channel": "phone", "external_id": "bob-call"},
        "fields": {"call": {"ani": "07700 900999"}, "citizen": {"name": "Canary-Bob"},
                   "content": {"text": "Canary-Bob-Text"}},
        "categories": {"call.ani": "contact.phone", "citizen.name": "identity.name",
                       "content.text": "content.free_text"}})",
    R"({"meta": {"channel": "visit", "external_id": "other-jane-visit"},
        "fields": {"citizen": {"name": "Jane Smith", "address": {"postcode": "LS2 9ZZ"}},
                   "content": {"text": "Canary-OtherJane-Text"}},
        "categories": {"citizen.name": "identity.name", "citizen.address.postcode": "contact.postcode",
                       "content.text": "content.free_text"}})",
    R"({"meta": {"channel": "visit", "external_id": "neighbour-visit"},
        "fields": {"citizen": {"name": "Canary-Neighbour", "address": {"postcode": "LS1 4AB"}},
                   "content": {"text": "Canary-Neighbour-Text"}},
        "categories": {"citizen.name": "identity.name", "citizen.address.postcode": "contact.postcode",
                       "content.text": "content.free_text"}})",
};

std::string one_line(std::string s) {
    std::string out;
    for (char c : s)
        if (c != '\n') out.push_back(c);
    return out;
}



std::string first_match(const std::string& text, const std::string& pattern) {
    std::smatch m;
    if (!std::regex_search(text, m, std::regex(pattern))) return "";
    return m[1];
}

std::set<std::string> all_matches(const std::string& text, const std::string& pattern) {
    std::set<std::string> out;
    std::regex re(pattern);
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
        out.insert((*it)[1]);
    return out;
}

std::int64_t now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// A running node with the six records delivered.
struct Daemon {
    TempDir dir{"sb-admin-gov"};
    std::filesystem::path config;
    std::unique_ptr<Process> process;
    int port = 0;

    Daemon() {
        std::filesystem::create_directories(dir.path / "in");
        config = dir.write("node.toml", R"(
[node]
data_dir = "data"
[sources.stream]
plugin = "jsonl-source"
poll_interval = "20ms"
[sources.stream.config]
path = "in"
[destinations.dept]
plugin = "memory-sink"
[destinations.dept.config]
output = "dept.jsonl"
[[route]]
category = "unclassified"
destination = "dept"
purpose = "answering the contact"
profile = "p"
[profiles.p.fields]
"citizen.name" = "keep"
"contact.phone" = "mask"
[retention]
sweep_interval = "200ms"
[[admin.token]]
name = "dpo"
token = "env:SB_TEST_ADMIN_DPO"
[[admin.token]]
name = "reader"
token = "env:SB_TEST_ADMIN_READER"
read_only = true
)");
        process = std::make_unique<Process>(
            std::vector<std::string>{sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                                     sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"},
            kEnv);
        port = sbtest::ready_port(*process);
        {
            std::ofstream out(dir.path / "in" / ".part-1.tmp");
            for (const char* l : kLines) out << one_line(l) << "\n";
        }
        std::filesystem::rename(dir.path / "in" / ".part-1.tmp", dir.path / "in" / "part-1.jsonl");
        INFO(process->err());
        REQUIRE(sbtest::wait_until([&] {
            process->pump(0);
            return sbtest::count_lines(dir.path / "dept.jsonl") == std::size(kLines);
        }));
    }

    Http call(const std::string& method, const std::string& path, const std::string& token,
              const std::string& body = "") {
        process->pump(0);
        return sbtest::http_call(port, method, path, token, body);
    }

    sbtest::Result cli(std::vector<std::string> args) {
        args.insert(args.begin(), sbtest::switchboard_binary());
        args.insert(args.end(), {"-c", config.string()});
        return sbtest::run(args, 60s, kEnv);
    }

    // The audit trail's lines without their hashes (hex digits would match
    // the digits searched for, by chance).
    std::string trail() {
        std::string t;
        for (const auto& l : sbtest::audit_lines(dir.path / "data")) t += l.substr(0, l.rfind('\t') + 1) + "\n";
        return t;
    }

    // Stops the node (its audit trail written out), exit code 0.
    void stop() {
        process->signal(SIGTERM);
        // Beyond the node's own 30 s shutdown watchdog, which says what it
        // was stuck on.
        auto code = process->wait(40s);
        INFO(process->err());
        REQUIRE(code == 0);
    }
};

// The record ids a SAR bundle lists.
std::set<std::string> record_ids(const std::string& bundle) {
    return all_matches(bundle, R"re("id": "(R[0-9]+-[0-9]+)")re");
}

} // namespace

TEST_CASE("admin API: POST sar finds the person's records in every form and no one else's, as JSON or HTML") {
    Daemon d;
    Http sar = d.call("POST", "/admin/v1/sar", kDpoToken,
                      R"({"phone": "+44 (0)7700 900 123", "name": "jane smith", "postcode": "LS1 4AB"})");
    INFO(sar.body);
    REQUIRE(sar.status == 200);
    CHECK(sar.content_type == "application/json");
    CHECK(sar.cache_control == "no-store");
    for (const char* mine : {"\"external_id\": \"jane-call\"", "\"external_id\": \"jane-chat\"",
                             "\"external_id\": \"jane-visit\"", "my council tax bill", "the boiler is broken",
                             "bin not collected", "\"searched_by\": \"name, postcode, phone\"", "\"hold\": null",
                             "\"department\": \"dept\"", "answering the contact"})
        CHECK(sar.body.find(mine) != std::string::npos);
    for (const char* theirs : {"bob-call", "other-jane-visit", "neighbour-visit", "Canary-", "07700 900999", "LS2 9ZZ"})
        CHECK(sar.body.find(theirs) == std::string::npos);
    auto found = record_ids(sar.body);
    CHECK(found.size() == 3);
    CHECK(sar.body.find("\"held\": true") == std::string::npos);

    // A strong identifier alone: the chat, by its Landbot id, only.
    Http chat = d.call("POST", "/admin/v1/sar", kDpoToken, R"({"landbot_id": "98765"})");
    REQUIRE(chat.status == 200);
    CHECK(chat.body.find("jane-chat") != std::string::npos);
    CHECK(record_ids(chat.body).size() == 1);

    // Nobody: an empty bundle, not an error.
    Http nobody = d.call("POST", "/admin/v1/sar", kDpoToken, R"({"email": "nobody@example.org"})");
    REQUIRE(nobody.status == 200);
    CHECK(nobody.body.find("\"records\": []") != std::string::npos);

    // The readable report.
    Http page = d.call("POST", "/admin/v1/sar?format=html", kDpoToken,
                       R"({"phone": "07700900123", "name": "Jane Smith", "postcode": "ls14ab"})");
    REQUIRE(page.status == 200);
    CHECK(page.content_type == "text/html; charset=utf-8");
    CHECK(page.body.rfind("<!DOCTYPE html>", 0) == 0);
    for (const auto& id : found) CHECK(page.body.find("Record " + id) != std::string::npos);
    CHECK(page.body.find("the boiler is broken") != std::string::npos);
    CHECK(page.body.find("Canary-") == std::string::npos);
    CHECK(d.call("POST", "/admin/v1/sar?format=pdf", kDpoToken, R"({"phone": "07700900123"})").status == 400);

    // The answers are not logged: no identifier and no content in the node's log.
    d.stop();
    for (const char* personal : {"07700", "Jane", "jane", "LS1", "98765", "boiler"}) {
        INFO(personal);
        CHECK(d.process->err().find(personal) == std::string::npos);
    }
    std::string trail = d.trail();
    CHECK(std::regex_search(trail, std::regex("\tadmin\t-\tactor=dpo;method=POST;endpoint=/admin/v1/sar;status=200")));
    CHECK(std::regex_search(trail, std::regex("\tadmin\t-\tactor=dpo;method=POST;endpoint=/admin/v1/sar;status=400")));
    for (const char* personal : {"07700", "Jane", "98765", "nobody@"}) CHECK(trail.find(personal) == std::string::npos);
}

TEST_CASE("admin API: holds placed by SAR, by record and by subject; listed by the API and the CLI; audited; ended") {
    Daemon d;

    // The SAR with a hold: every record found is held, by the token's name.
    Http sar = d.call("POST", "/admin/v1/sar", kDpoToken, R"({"phone": "07700 900123", "hold": true})");
    INFO(sar.body);
    REQUIRE(sar.status == 200);
    const std::string sar_id = first_match(sar.body, R"re("sar": "(SAR-[0-9T]+Z)")re");
    REQUIRE(!sar_id.empty());
    const std::string sar_hold = first_match(sar.body, R"re("hold": ([0-9]+))re");
    REQUIRE(!sar_hold.empty());
    auto jane = record_ids(sar.body);
    REQUIRE(jane.size() == 2); // by phone: the call and the chat
    CHECK(sbtest::count_of(sar.body, "\"held\": true") == 2);

    // Bob's record (found by his phone), held by id until a date.
    std::string bob_bundle = d.call("POST", "/admin/v1/sar", kDpoToken, R"({"phone": "07700900999"})").body;
    auto bob = record_ids(bob_bundle);
    REQUIRE(bob.size() == 1);
    const std::string until = sb::detail::format_time(now_ms() + 30 * 86'400'000LL).substr(0, 10);
    Http by_record = d.call("POST", "/admin/v1/holds", kDpoToken,
                            R"({"records": [")" + *bob.begin() + R"("], "reason": "complaint C-17", "until": ")" +
                                until + R"("})");
    INFO(by_record.body);
    REQUIRE(by_record.status == 201);
    const std::string record_hold = first_match(by_record.body, R"re(^\{"hold":([0-9]+),"records":1\}$)re");
    REQUIRE(!record_hold.empty());

    // The other Jane Smith, by name and postcode.
    Http by_subject = d.call("POST", "/admin/v1/holds", kDpoToken,
                             R"({"subject": {"name": "Smith Jane", "postcode": "ls2 9zz"}, "reason": "tribunal T-9"})");
    INFO(by_subject.body);
    REQUIRE(by_subject.status == 201);
    const std::string subject_hold = first_match(by_subject.body, R"re(^\{"hold":([0-9]+),"records":1\}$)re");
    REQUIRE(!subject_hold.empty());
    // Nobody by that subject: nothing held.
    Http none = d.call("POST", "/admin/v1/holds", kDpoToken, R"({"subject": {"nino": "QQ999999A"}, "reason": "x"})");
    CHECK(none.status == 404);
    CHECK(none.body.find("subject: no records found (searched by nino)") != std::string::npos);

    // Listed by the API (a read-only token may list)...
    Http list = d.call("GET", "/admin/v1/holds", kReaderToken);
    INFO(list.body);
    REQUIRE(list.status == 200);
    CHECK(list.body.find(R"("count":3,"in_force":3)") != std::string::npos);
    CHECK(list.body.find("{\"id\":" + sar_hold + ",\"state\":\"in force\",\"set_by\":\"dpo\",") != std::string::npos);
    CHECK(list.body.find("\"reason\":\"subject access request " + sar_id + "\",\"sar\":\"" + sar_id + "\"") !=
          std::string::npos);
    for (const auto& id : jane) CHECK(list.body.find("\"" + id + "\"") != std::string::npos);
    CHECK(list.body.find("\"reason\":\"complaint C-17\",\"sar\":null") != std::string::npos);
    // YYYY-MM-DD: through that day (UTC).
    auto through = sb::detail::parse_time(until + "T00:00:00Z");
    REQUIRE(through);
    CHECK(list.body.find("\"until\":\"" + sb::detail::format_time(*through + 86'400'000LL) + "\"") !=
          std::string::npos);
    CHECK(list.body.find("\"reason\":\"tribunal T-9\"") != std::string::npos);

    // ... and by the command, from the same journal.
    auto cli = d.cli({"hold", "list"});
    INFO(cli.out << cli.err);
    REQUIRE(cli.code == 0);
    CHECK(cli.out.find(sar_hold + "  in force  set by dpo") != std::string::npos);
    CHECK(cli.out.find("reason: subject access request " + sar_id + "  (" + sar_id + ")") != std::string::npos);
    CHECK(cli.out.find("reason: complaint C-17") != std::string::npos);
    CHECK(cli.out.find("3 hold(s), 3 in force") != std::string::npos);

    // The node audits them at its next sweep, as it does the CLI's.
    auto audited = [&](const std::string& record, const std::string& what) {
        return std::regex_search(d.trail(), std::regex("\thold\t" + record + "\t" + what));
    };
    // Waits for the entry; on failure shows the hold entries there are and the log.
    auto wait_audited = [&](const std::string& record, const std::string& what) {
        bool ok = sbtest::wait_until([&] {
            d.process->pump(0);
            return audited(record, what);
        });
        if (!ok) {
            std::string entries;
            for (const auto& l : sbtest::audit_lines(d.dir.path / "data"))
                if (l.find("\thold\t") != std::string::npos) entries += l + "\n";
            FAIL_CHECK("no hold entry " << record << " " << what << "\nhold entries:\n"
                                        << entries << "log:\n" << d.process->err());
        }
    };
    for (const auto& id : jane) wait_audited(id, "action=set;hold=" + sar_hold + ";by=dpo;set_at=[^;]+;sar=" + sar_id);
    wait_audited(*bob.begin(), "action=set;hold=" + record_hold + ";by=dpo;set_at=[^;]+;until=");

    // sar/close ends the SAR's hold, and only it; a second close finds none.
    Http close = d.call("POST", "/admin/v1/sar/close", kDpoToken, R"({"sar": ")" + sar_id + R"("})");
    INFO(close.body);
    CHECK(close.status == 200);
    CHECK(close.body == R"({"sar":")" + sar_id + R"(","holds_ended":1})");
    Http again = d.call("POST", "/admin/v1/sar/close", kDpoToken, R"({"sar": ")" + sar_id + R"("})");
    CHECK(again.status == 404);
    CHECK(again.body.find("no hold in force for " + sar_id) != std::string::npos);
    list = d.call("GET", "/admin/v1/holds", kDpoToken);
    CHECK(list.body.find("{\"id\":" + sar_hold + ",\"state\":\"ended\",") != std::string::npos);
    CHECK(list.body.find(R"("ended_by":"dpo")") != std::string::npos);
    CHECK(list.body.find(R"("count":3,"in_force":2)") != std::string::npos);

    // holds/{id}/end: ended once; then a conflict; unknown ids and paths 404.
    Http end = d.call("POST", "/admin/v1/holds/" + record_hold + "/end", kDpoToken);
    INFO(end.body);
    CHECK(end.status == 200);
    CHECK(end.body.find("{\"hold\":" + record_hold + ",\"state\":\"ended\",\"ended_by\":\"dpo\"") == 0);
    Http twice = d.call("POST", "/admin/v1/holds/" + record_hold + "/end", kDpoToken);
    CHECK(twice.status == 409);
    CHECK(twice.body.find("already ended") != std::string::npos);
    Http unknown = d.call("POST", "/admin/v1/holds/999999/end", kDpoToken);
    CHECK(unknown.status == 404);
    CHECK(unknown.body.find("no hold 999999") != std::string::npos);
    CHECK(d.call("POST", "/admin/v1/holds/abc/end", kDpoToken).status == 404);
    CHECK(d.call("POST", "/admin/v1/holds/" + subject_hold + "/stop", kDpoToken).status == 404);
    CHECK(d.call("POST", "/admin/v1/holds/" + subject_hold, kDpoToken).status == 404);

    cli = d.cli({"hold", "list"});
    CHECK(cli.out.find("3 hold(s), 1 in force") != std::string::npos);
    CHECK(std::regex_search(cli.out, std::regex(sar_hold + "  ended  set by dpo .* ended [0-9TZ:.-]+ by dpo")));

    // The ends are audited at the next sweep too.
    for (const auto& id : jane) wait_audited(id, "action=ended;hold=" + sar_hold + ";by=dpo;ended_at=");
    wait_audited(*bob.begin(), "action=ended;hold=" + record_hold + ";by=dpo");

    d.stop();
    std::string trail = d.trail();
    auto has = [&](const std::string& pattern) {
        return std::regex_search(trail, std::regex("\tadmin\t-\tactor=" + pattern));
    };
    CHECK(has("dpo;method=POST;endpoint=/admin/v1/sar;status=200"));
    CHECK(has("dpo;method=POST;endpoint=/admin/v1/holds;status=201"));
    CHECK(has("dpo;method=POST;endpoint=/admin/v1/holds;status=404"));
    CHECK(has("reader;method=GET;endpoint=/admin/v1/holds;status=200"));
    CHECK(has("dpo;method=POST;endpoint=/admin/v1/sar/close;status=200"));
    CHECK(has("dpo;method=POST;endpoint=/admin/v1/sar/close;status=404"));
    CHECK(has("dpo;method=POST;endpoint=/admin/v1/holds/\\*;status=200"));
    CHECK(has("dpo;method=POST;endpoint=/admin/v1/holds/\\*;status=409"));
    CHECK(has("dpo;method=POST;endpoint=/admin/v1/holds/\\*;status=404"));
    // Reasons and identifiers stay out of the trail and the log.
    for (const char* text : {"complaint C-17", "tribunal T-9", "07700", "ls2 9zz", "LS2"}) {
        INFO(text);
        CHECK(trail.find(text) == std::string::npos);
        CHECK(d.process->err().find(text) == std::string::npos);
    }
    auto verify = d.cli({"audit", "verify"});
    INFO(verify.out << verify.err);
    CHECK(verify.code == 0);
}

TEST_CASE("admin API: bad governance requests are refused with the field named; read-only tokens cannot POST") {
    Daemon d;
    struct Bad {
        const char* path;
        std::string body;
        int status;
        const char* message;
    };
    const std::vector<Bad> cases = {
        {"sar", "not json", 400, "body: expected a JSON object"},
        {"sar", "[1]", 400, "body: expected a JSON object"},
        {"sar", R"({"phone": "07700900123",)", 400, "body: expected a JSON object"},
        {"sar", "{}", 400, "body: give an identifier"},
        {"sar", R"({"phone": "07700900123", "shoe": "9"})", 400, "unknown key 'shoe'; use name, postcode, phone"},
        {"sar", R"({"phone": 7700900123})", 400, "phone: expected a string"},
        {"sar", R"({"name": ["Jane"], "postcode": "LS1 4AB"})", 400, "name: expected a string"},
        {"sar", R"({"phone": ""})", 400, "phone: empty"},
        {"sar", R"({"phone": "call me"})", 400, "phone: not a valid phone number"},
        {"sar", R"({"nino": "QQ12"})", 400, "nino: not a valid National Insurance number"},
        {"sar", R"({"name": "Jane Smith"})", 400, "name: a name or a postcode alone matches other people"},
        {"sar", R"({"postcode": "LS1 4AB"})", 400, "postcode: a name or a postcode alone matches other people"},
        {"sar", R"({"phone": "07700900123", "hold": "yes"})", 400, "hold: expected true or false"},
        {"sar/close", "{}", 400, "sar: required"},
        {"sar/close", R"({"sar": 12})", 400, "sar: expected a string"},
        {"sar/close", R"({"sar": "SAR-yesterday"})", 400, "sar: expected a subject access request id"},
        {"sar/close", R"({"sar": "SAR-20260101T000000Z", "by": "me"})", 400, "unknown key 'by'; use sar"},
        {"sar/close", R"({"sar": "SAR-20260101T000000Z"})", 404, "no hold in force for SAR-20260101T000000Z"},
        {"holds", R"({"records": ["R1-0"]})", 400, "reason: required"},
        {"holds", R"({"records": ["R1-0"], "reason": 5})", 400, "reason: expected a string"},
        {"holds", R"({"records": ["R1-0"], "reason": "  "})", 400, "reason: empty"},
        {"holds", R"({"reason": "x"})", 400, "give either records"},
        {"holds", R"({"records": ["R1-0"], "subject": {"phone": "07700900123"}, "reason": "x"})", 400,
         "give either records"},
        {"holds", R"({"records": "R1-0", "reason": "x"})", 400, "records: expected an array of record ids"},
        {"holds", R"({"records": [], "reason": "x"})", 400, "records: empty"},
        {"holds", R"({"records": ["R1-0", 2], "reason": "x"})", 400, "records[1]: expected a record id"},
        {"holds", R"({"records": ["R999999-0"], "reason": "x"})", 404, "records: no record R999999-0"},
        {"holds", R"({"records": ["R1-0"], "reason": "x", "until": "next week"})", 400,
         "until: expected YYYY-MM-DD"},
        {"holds", R"({"records": ["R1-0"], "reason": "x", "until": "2001-01-31"})", 400,
         "until: 2001-02-01T00:00:00.000Z has passed"},
        {"holds", R"({"records": ["R1-0"], "reason": "x", "until": 20270131})", 400, "until: expected a string"},
        {"holds", R"({"records": ["R1-0"], "reason": "x", "why": "y"})", 400,
         "unknown key 'why'; use records, subject, reason, until"},
        {"holds", R"({"subject": "Jane Smith", "reason": "x"})", 400, "subject: expected an object of identifiers"},
        {"holds", R"({"subject": {}, "reason": "x"})", 400, "subject: give an identifier"},
        {"holds", R"({"subject": {"name": "Jane Smith"}, "reason": "x"})", 400,
         "subject.name: a name or a postcode alone"},
        {"holds", R"({"subject": {"phone": "07700900123", "colour": "red"}, "reason": "x"})", 400,
         "unknown key 'subject.colour'; use name, postcode, phone, email, nino, landbot_id, reference"},
        {"holds", R"({"subject": {"email": "not an address"}, "reason": "x"})", 400,
         "subject.email: not a valid e-mail address"},
        {"holds", R"({"subject": {"phone": "07700900123", "hold": true}, "reason": "x"})", 400,
         "unknown key 'subject.hold'"},
        {"sar", "{\"reference\": \"" + std::string(70 * 1024, 'A') + "\"}", 413, "body: larger than 64 KiB"},
    };
    for (const auto& c : cases) {
        Http r = d.call("POST", std::string("/admin/v1/") + c.path, kDpoToken, c.body);
        INFO(c.path << " " << c.body.substr(0, 120) << " -> " << r.status << " " << r.body);
        CHECK(r.status == c.status);
        CHECK(r.content_type == "application/json");
        CHECK(r.body.rfind("{\"error\":\"" + std::string(c.message), 0) == 0);
    }
    // Nothing was held by any of them.
    CHECK(d.call("GET", "/admin/v1/holds", kDpoToken).body == R"({"holds":[],"count":0,"in_force":0})");

    // A read-only token may list holds, and nothing else here: every POST is
    // a change or a disclosure (docs/configuration.md, read_only).
    CHECK(d.call("GET", "/admin/v1/holds", kReaderToken).status == 200);
    for (const auto& [path, body] : std::vector<std::pair<std::string, std::string>>{
             {"sar", R"({"phone": "07700900123", "hold": true})"},
             {"sar", R"({"phone": "07700900123"})"},
             {"holds", R"({"records": ["R1-0"], "reason": "x"})"},
             {"sar/close", R"({"sar": "SAR-20260101T000000Z"})"},
             {"holds/1/end", ""}}) {
        Http r = d.call("POST", "/admin/v1/" + path, kReaderToken, body);
        INFO(path << " -> " << r.body);
        CHECK(r.status == 403);
        CHECK(r.body == R"({"error":"token 'reader' is read-only"})");
    }
    CHECK(d.call("GET", "/admin/v1/holds", kDpoToken).body == R"({"holds":[],"count":0,"in_force":0})");
    // No token: 401, audited as "-".
    CHECK(d.call("POST", "/admin/v1/sar", "", R"({"phone": "07700900123"})").status == 401);
    CHECK(d.call("GET", "/admin/v1/sar", kDpoToken).status == 405);

    d.stop();
    std::string trail = d.trail();
    auto count = [&](const std::string& pattern) {
        std::regex re("\tadmin\t-\tactor=" + pattern + "\t");
        return std::distance(std::sregex_iterator(trail.begin(), trail.end(), re), std::sregex_iterator());
    };
    // Every call: one entry each, with the token's name and the status given.
    CHECK(count("dpo;method=POST;endpoint=/admin/v1/sar;status=400") == 13);
    CHECK(count("dpo;method=POST;endpoint=/admin/v1/sar;status=413") == 1);
    CHECK(count("dpo;method=POST;endpoint=/admin/v1/sar/close;status=400") == 4);
    CHECK(count("dpo;method=POST;endpoint=/admin/v1/sar/close;status=404") == 1);
    CHECK(count("dpo;method=POST;endpoint=/admin/v1/holds;status=400") == 18);
    CHECK(count("dpo;method=POST;endpoint=/admin/v1/holds;status=404") == 1);
    CHECK(count("reader;method=POST;endpoint=/admin/v1/sar;status=403") == 2);
    CHECK(count("reader;method=POST;endpoint=/admin/v1/holds;status=403") == 1);
    CHECK(count("reader;method=POST;endpoint=/admin/v1/sar/close;status=403") == 1);
    CHECK(count("reader;method=POST;endpoint=/admin/v1/holds/\\*;status=403") == 1);
    CHECK(count("reader;method=GET;endpoint=/admin/v1/holds;status=200") == 1);
    CHECK(count("-;method=POST;endpoint=/admin/v1/sar;status=401") == 1);
    CHECK(count("dpo;method=GET;endpoint=/admin/v1/sar;status=405") == 1);
    CHECK(trail.find("07700") == std::string::npos);
    CHECK(d.process->err().find("07700") == std::string::npos);
}

TEST_CASE("admin API: POST erasures erases a person's records through the node, held ones kept; status and list; "
          "bad bodies refused; read-only tokens cannot erase") {
    Daemon d;
    // Bob's record is held (a complaint); then Jane and Bob are erased by phone.
    std::string bob_bundle = d.call("POST", "/admin/v1/sar", kDpoToken, R"({"phone": "07700900999"})").body;
    auto bob = record_ids(bob_bundle);
    REQUIRE(bob.size() == 1);
    REQUIRE(d.call("POST", "/admin/v1/holds", kDpoToken,
                   R"({"records": [")" + *bob.begin() + R"("], "reason": "complaint C-18"})")
                .status == 201);
    auto jane = record_ids(d.call("POST", "/admin/v1/sar", kDpoToken, R"({"phone": "07700 900123"})").body);
    REQUIRE(jane.size() == 2);

    // Refusals first: nothing is placed by them.
    struct Bad {
        const char* body;
        int status;
        const char* message;
    };
    for (const Bad& b : {Bad{"[1]", 400, "body: expected a JSON object"},
                         Bad{R"({"phone": "07700900123"})", 400, "unknown key 'phone'"},
                         Bad{R"({"subject": {"phone": "07700900123"}, "records": ["R1-0"]})", 400, "give either records"},
                         Bad{R"({"records": []})", 400, "records: empty"},
                         Bad{R"({"records": [7]})", 400, "records[0]: expected a record id"},
                         Bad{R"({"records": ["R999-0"]})", 404, "records: no record R999-0 in the journal"},
                         Bad{R"({"subject": {"name": "Jane Smith"}})", 400, "subject."},
                         Bad{R"({"subject": {"email": "nobody@example.org"}})", 404, "subject: no records found"},
                         Bad{R"({"subject": {"phone": "07700900123"}, "wait": 31})", 400, "wait: expected whole seconds"},
                         Bad{R"({"subject": {"phone": "07700900123"}, "wait": "5"})", 400, "wait: expected whole seconds"}}) {
        Http r = d.call("POST", "/admin/v1/erasures", kDpoToken, b.body);
        INFO(b.body << " -> " << r.status << " " << r.body);
        CHECK(r.status == b.status);
        CHECK(r.body.find(b.message) != std::string::npos);
    }
    CHECK(d.call("POST", "/admin/v1/erasures", kReaderToken, R"({"subject": {"phone": "07700900123"}})").status == 403);
    CHECK(d.call("GET", "/admin/v1/erasures", kDpoToken).body == "{\"erasures\":[]}");

    Http erase = d.call("POST", "/admin/v1/erasures", kDpoToken,
                        R"({"records": [")" + *jane.begin() + R"(", ")" + *jane.rbegin() + R"(", ")" + *bob.begin() +
                            R"("], "wait": 20})");
    INFO(erase.body);
    INFO(d.process->err());
    REQUIRE(erase.status == 200); // complete: the memory sink and the jsonl source answer at once
    CHECK(erase.cache_control == "no-store");
    CHECK(erase.body.find("\"requested_by\": \"dpo\"") != std::string::npos);
    CHECK(erase.body.find("\"complete\": true") != std::string::npos);
    for (const auto& id : jane)
        CHECK(erase.body.find("\"id\": \"" + id + "\", \"outcome\": \"erased\", \"steps\": [{\"instance\": \"dept\", "
                              "\"state\": \"confirmed\"") != std::string::npos);
    CHECK(erase.body.find("\"id\": \"" + *bob.begin() + "\", \"outcome\": \"held\", \"holds\": [1]") != std::string::npos);
    // The department's copies: Jane's gone, Bob's (held) and the others' kept.
    std::ifstream in(d.dir.path / "dept.jsonl");
    std::string dept((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(sbtest::count_lines(d.dir.path / "dept.jsonl") == std::size(kLines) - 2);
    CHECK(dept.find("Canary-Bob") != std::string::npos);

    // Status and list, by any token (GETs).
    Http status = d.call("GET", "/admin/v1/erasures/1", kReaderToken);
    CHECK(status.status == 200);
    CHECK(status.body == erase.body);
    CHECK(d.call("GET", "/admin/v1/erasures/2", kDpoToken).status == 404);
    CHECK(d.call("GET", "/admin/v1/erasures/x", kDpoToken).status == 404);
    Http list = d.call("GET", "/admin/v1/erasures", kReaderToken);
    CHECK(std::regex_search(list.body, std::regex(R"re(^\{"erasures":\[\{"erasure":1,"requested_by":"dpo",)re")));
    // The same erasure through the CLI.
    auto cli = d.cli({"erase", "status", "1"});
    CHECK(cli.code == 0);
    CHECK(cli.out.find("erasure 1, asked by dpo") != std::string::npos);

    d.stop();
    std::string trail = d.trail();
    CHECK(std::regex_search(trail, std::regex("\tadmin\t-\tactor=dpo;method=POST;endpoint=/admin/v1/erasures;status=200")));
    CHECK(std::regex_search(trail, std::regex("\tadmin\t-\tactor=reader;method=POST;endpoint=/admin/v1/erasures;status=403")));
    CHECK(sbtest::count_of(trail, "\terasure\t") == 3);
    CHECK(trail.find("reason=request;erasure=1;by=dpo;outcome=erased;store=deleted") != std::string::npos);
    for (const char* personal : {"07700", "Jane", "nobody@"}) CHECK(trail.find(personal) == std::string::npos);
    for (const char* personal : {"07700", "Jane", "Canary"}) CHECK(d.process->err().find(personal) == std::string::npos);
}
