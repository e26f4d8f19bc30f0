// The email source end to end: the real daemon as a subprocess, a real
// maildir, a memory-sink destination writing what it receives to a file.
// Every fixture reaches the department as its record; messages move to cur/;
// a redelivery is not emitted twice; an oversized message is quarantined; no
// card number is at rest in the data directory; nothing personal is logged.
#include "process.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <catch2/catch.hpp>

#include <openssl/evp.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

using namespace std::chrono_literals;
using sbtest::Process;
using sbtest::TempDir;
namespace fs = std::filesystem;

namespace {

using sbtest::wait_until;

std::string fixture(const std::string& name) {
    std::ifstream in(sbtest::env_or_fail("SB_FIXTURES") + "/email/" + name, std::ios::binary);
    REQUIRE(in);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}


std::vector<std::string> lines(const fs::path& p) {
    std::vector<std::string> out;
    std::ifstream in(p);
    for (std::string l; std::getline(in, l);)
        if (!l.empty()) out.push_back(l);
    return out;
}

std::string sha256_hex(std::string_view data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    REQUIRE(EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) == 1);
    std::string out;
    char buf[3];
    for (unsigned int i = 0; i < len; ++i) {
        std::snprintf(buf, sizeof buf, "%02x", md[i]);
        out += buf;
    }
    return out;
}

// As a mail system delivers: written into tmp/, renamed into new/.
void deliver(const fs::path& maildir, const std::string& name, const std::string& bytes) {
    {
        std::ofstream out(maildir / "tmp" / name, std::ios::binary);
        out << bytes;
        REQUIRE(out.good());
    }
    fs::rename(maildir / "tmp" / name, maildir / "new" / name);
}

std::set<std::string> names(const fs::path& dir) {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
    return out;
}

// Every byte of every file under `dir`.
std::string slurp_tree(const fs::path& dir) {
    std::string all;
    for (const auto& e : fs::recursive_directory_iterator(dir))
        if (e.is_regular_file()) all += sbtest::read_file(e.path());
    return all;
}

using Obj = Poco::JSON::Object::Ptr;

// A delivered record: {"seq":…,"record_id":…,"record":{"meta":…,"fields":…,"attachments":…}}.
struct Delivered {
    Obj record, meta, fields;
    Poco::JSON::Array::Ptr attachments;

    std::string meta_str(const char* key) const { return meta->has(key) ? meta->getValue<std::string>(key) : ""; }
    // A string leaf by dotted path ("content.subject"); "" if absent.
    std::string str(const std::string& path) const {
        Obj o = fields;
        std::string rest = path;
        for (;;) {
            std::size_t dot = rest.find('.');
            std::string key = rest.substr(0, dot);
            if (!o || !o->has(key)) return "";
            if (dot == std::string::npos) return o->getValue<std::string>(key);
            o = o->getObject(key);
            rest = rest.substr(dot + 1);
        }
    }
    std::vector<std::string> defects() const {
        std::vector<std::string> out;
        if (!fields->has("defects")) return out;
        auto a = fields->getArray("defects");
        for (std::size_t i = 0; i < a->size(); ++i) out.push_back(a->getElement<std::string>(static_cast<unsigned>(i)));
        return out;
    }
};

std::vector<Delivered> delivered(const fs::path& file) {
    std::vector<Delivered> out;
    for (const auto& l : lines(file)) {
        Poco::JSON::Parser parser;
        Obj line = parser.parse(l).extract<Obj>();
        Delivered d;
        d.record = line->getObject("record");
        d.meta = d.record->getObject("meta");
        d.fields = d.record->getObject("fields");
        d.attachments = d.record->has("attachments") ? d.record->getArray("attachments") : nullptr;
        out.push_back(d);
    }
    return out;
}

} // namespace

TEST_CASE("email daemon: every fixture through a real maildir to a department, redelivery, "
          "quarantine, no card at rest, nothing personal logged") {
    TempDir dir("sb-email-e2e");
    const fs::path maildir = dir.path / "maildir";
    const fs::path maildir2 = dir.path / "maildir-default";
    for (const auto& m : {maildir, maildir2})
        for (const char* sub : {"tmp", "new", "cur"}) fs::create_directories(m / sub);
    // The fixtures are dated January 2025: "mail" keeps records for ten years
    // so that their dates stand; "mail-default" has the default 28 days, so
    // their Date is refused and the message is kept from its arrival instead.
    auto config = dir.write("email.toml", R"(
[node]
data_dir = "data"
[sources.mail]
plugin = "email"
poll_interval = "50ms"
retention = "3650d"
[sources.mail.config]
maildir = "maildir"
max_message = "64KiB"
[sources.mail-default]
plugin = "email"
poll_interval = "50ms"
[sources.mail-default.config]
maildir = "maildir-default"
[destinations.everything]
plugin = "memory-sink"
[destinations.everything.config]
output = "everything.jsonl"
[[route]]
category = ["*", "unclassified"]
destination = "everything"
purpose = "test"
profile = "all"
lawful_basis = "test"
[profiles.all.fields]
"*" = "keep"
)");
    const char* const fixtures[] = {"01_plain_council_tax_move.eml", "02_multipart_evidence_reply.eml",
                                    "03_unicode_headers_pii_html.eml",
                                    "04_malformed_lf_only_no_date.eml"};
    for (int i = 0; i < 4; ++i) deliver(maildir, "173615000" + std::to_string(i) + ".M1P1.mx", fixture(fixtures[i]));
    // Over max_message: quarantined, removed from the drop.
    std::string big = "From: big@example.org\r\nSubject: huge scan\r\n\r\n" + std::string(100 * 1024, 'x');
    deliver(maildir, "1736150009.M9P9.mx", big);
    deliver(maildir2, "1736150100.M1P1.mx", fixture(fixtures[0]));

    const fs::path out = dir.path / "everything.jsonl";
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
    REQUIRE(daemon.wait_for_log("core: ready", 20s));
    bool all = wait_until([&] { return lines(out).size() >= 5; }, 30s);
    INFO(daemon.err());
    REQUIRE(all);

    // Every message taken moved to cur/ with the ":2," info; the oversized one is gone.
    CHECK(wait_until([&] { return names(maildir / "new").empty(); }, 10s));
    CHECK(names(maildir / "cur") ==
          std::set<std::string>{"1736150000.M1P1.mx:2,", "1736150001.M1P1.mx:2,",
                                "1736150002.M1P1.mx:2,", "1736150003.M1P1.mx:2,"});
    CHECK(names(maildir2 / "cur") == std::set<std::string>{"1736150100.M1P1.mx:2,"});

    // The mail system delivers 01 again: moved to cur/, not emitted twice.
    deliver(maildir, "1736159999.M2P2.mx", fixture(fixtures[0]));
    CHECK(wait_until([&] { return names(maildir / "cur").size() == 5; }, 10s));
    CHECK(names(maildir / "new").empty());
    std::this_thread::sleep_for(500ms);
    CHECK(lines(out).size() == 5);

    daemon.signal(SIGTERM);
    REQUIRE(daemon.wait(20s) == 0);

    auto records = delivered(out);
    REQUIRE(records.size() == 5);
    auto find = [&](const std::string& source, const std::string& subject_part) -> const Delivered* {
        for (const auto& r : records)
            if (r.meta_str("source") == source && r.str("content.subject").find(subject_part) != std::string::npos)
                return &r;
        return nullptr;
    };
    const fs::path data = dir.path / "data";

    {
        INFO("01: council tax move");
        const Delivered* r = find("mail", "Change of address");
        REQUIRE(r);
        CHECK(r->meta_str("channel") == "email");
        CHECK(r->meta_str("occurred_at") == "2025-01-06T08:14:57.000Z");
        CHECK(r->meta_str("external_id").empty()); // vendor ids never leave
        CHECK(r->str("citizen.name") == "Rhiannon Baptiste-Walsh");
        CHECK(r->str("contact.email") == "rhiannon.bw@example.org");
        CHECK(r->str("hints.subject") == "Change of address - council tax");
        CHECK(r->str("content.text").find("account number is 9000123456") != std::string::npos);
        CHECK(r->str("content.thread_id") == "20250106081457.FAKE0001@example.org");
        CHECK(r->defects().empty());
    }
    {
        INFO("02: reply threaded to the council's request, attachment under data_dir by file://");
        const Delivered* r = find("mail", "further evidence");
        REQUIRE(r);
        CHECK(r->str("content.thread_id") == "hb-request-0000-8812@council.example");
        CHECK(r->str("content.in_reply_to") == "hb-request-0000-8812@council.example");
        REQUIRE(r->attachments);
        REQUIRE(r->attachments->size() == 1);
        Obj a = r->attachments->getObject(0);
        std::string uri = a->getValue<std::string>("uri");
        std::string prefix = "file://" + fs::absolute(data / "plugins" / "mail" / "attachments").lexically_normal().string() + "/";
        CHECK(uri.rfind(prefix, 0) == 0);
        CHECK(uri.substr(uri.size() - 24) == "/1-tenancy-agreement.txt");
        std::string bytes = sbtest::read_file(uri.substr(7));
        CHECK(bytes.rfind("TENANCY AGREEMENT (FICTIONAL TEST DOCUMENT)", 0) == 0);
        CHECK(a->getValue<std::string>("sha256") == sha256_hex(bytes));
        CHECK(a->getValue<std::int64_t>("size") == 173);
        CHECK(a->getValue<std::string>("media_type") == "text/plain");
        CHECK(a->getValue<std::string>("category") == "media.document");
    }
    {
        INFO("03: decoded subject with emoji; card redacted at ingest; NINO present");
        const Delivered* r = find("mail", "\xF0\x9F\x97\x91");
        REQUIRE(r);
        CHECK(r->str("content.subject") ==
              "Bin collection \xF0\x9F\x97\x91\xEF\xB8\x8F missed \xE2\x80\x93 \xC4\x8Ctvrtek");
        CHECK(r->str("citizen.name") == "Siobh\xC3\xA1n N\xC3\xAD Bhriain");
        std::string text = r->str("content.text");
        CHECK(text.find("4111") == std::string::npos);
        CHECK(text.find("[CARD]") != std::string::npos);
        CHECK(text.find("QQ 12 34 56 C") != std::string::npos);
        CHECK(text.find("31 Madeup Street L1 0AA") != std::string::npos);
    }
    {
        INFO("04: recorded with its defects and a hash-based id");
        const Delivered* r = find("mail", "flytipping");
        REQUIRE(r);
        CHECK(r->meta_str("occurred_at").empty());
        CHECK(r->str("content.thread_id") ==
              "sha256:" + sha256_hex(fixture("04_malformed_lf_only_no_date.eml")));
        auto d = r->defects();
        std::set<std::string> got(d.begin(), d.end());
        for (const char* want : {"bare LF line endings", "no Date header", "no Message-ID header",
                                 "multipart boundary never closed"})
            CHECK(got.count(want));
        CHECK(d.size() == 6);
    }
    {
        INFO("an old Date under the default retention: kept from arrival, with a defect");
        const Delivered* r = find("mail-default", "Change of address");
        REQUIRE(r);
        CHECK(r->meta_str("occurred_at").empty());
        auto d = r->defects();
        REQUIRE(d.size() == 1);
        CHECK(d[0].rfind("Date header refused as occurred_at", 0) == 0);
    }
    {
        INFO("the oversized message is in the quarantine (audited), not in the drop");
        std::string audit = slurp_tree(data / "audit");
        CHECK(audit.find("quarantine") != std::string::npos);
        CHECK(audit.find("instance=mail") != std::string::npos);
        CHECK(audit.find("1736150009.M9P9.mx") != std::string::npos);
        INFO(daemon.err());
        CHECK(daemon.err().find("quarantined message 1736150009.M9P9.mx: message of " +
                                std::to_string(big.size()) + " bytes exceeds max_message (65536 bytes)") !=
              std::string::npos);
    }
    {
        INFO("no card number at rest in the data directory");
        std::string raw = slurp_tree(data);
        CHECK(raw.find("4111111111111111") == std::string::npos);
        CHECK(raw.find("4111 1111 1111 1111") == std::string::npos);
    }
    {
        // (The card as the fixtures spell it: a bare "4111" can be part of
        // the HTTP port the log names.)
        INFO("nothing personal in the daemon's log");
        for (const char* s : {"Rhiannon", "rhiannon.bw", "Change of address", "9000123456", "Marek",
                              "hb-request", "tenancy", "Siobh", "siobhan", "4111 1111", "41111111", "QQ 12", "Madeup",
                              "someone@example", "flytipping", "Mattresses", "FAKE000", "big@example",
                              "huge scan"}) {
            INFO(s);
            CHECK(daemon.err().find(s) == std::string::npos);
            CHECK(daemon.out().find(s) == std::string::npos);
        }
    }
}

TEST_CASE("email daemon: when a record expires, the core's erase hook takes the message out of the "
          "drop and its attachment out of the data directory") {
    TempDir dir("sb-email-expiry");
    const fs::path maildir = dir.path / "maildir";
    for (const char* sub : {"tmp", "new", "cur"}) fs::create_directories(maildir / sub);
    auto config = dir.write("email.toml", R"(
[node]
data_dir = "data"
[retention]
sweep_interval = "200ms"
[sources.mail]
plugin = "email"
poll_interval = "50ms"
retention = "2s"
[sources.mail.config]
maildir = "maildir"
[destinations.everything]
plugin = "memory-sink"
[destinations.everything.config]
output = "everything.jsonl"
[[route]]
category = ["*", "unclassified"]
destination = "everything"
purpose = "test"
profile = "all"
lawful_basis = "test"
[profiles.all.fields]
"*" = "keep"
)");
    deliver(maildir, "1736160000.M1P1.mx", fixture("02_multipart_evidence_reply.eml"));
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
    REQUIRE(daemon.wait_for_log("core: ready", 20s));
    const fs::path attachments = dir.path / "data" / "plugins" / "mail" / "attachments";
    auto attachment_files = [&] {
        std::size_t n = 0;
        if (fs::exists(attachments))
            for (const auto& e : fs::recursive_directory_iterator(attachments)) n += e.is_regular_file();
        return n;
    };
    // Taken: in cur/, its attachment written.
    bool taken = wait_until([&] { return names(maildir / "new").empty(); }, 10s);
    INFO(daemon.err());
    REQUIRE(taken);
    // Expired (2 s), swept, erased at the source: nothing left in the drop.
    bool erased = wait_until([&] {
        daemon.pump(10); // read its log so far
        return names(maildir / "cur").empty() && names(maildir / "new").empty() && attachment_files() == 0 &&
               daemon.err().find("erased record") != std::string::npos;
    }, 30s);
    daemon.signal(SIGTERM);
    REQUIRE(daemon.wait(20s) == 0);
    INFO(daemon.err());
    CHECK(erased);
    CHECK(daemon.err().find("erased record R1-0: 1 message file(s)") != std::string::npos);
    std::string audit = slurp_tree(dir.path / "data" / "audit");
    CHECK(audit.find("instance=mail") != std::string::npos);
    CHECK(audit.find("outcome=confirmed") != std::string::npos);
}
