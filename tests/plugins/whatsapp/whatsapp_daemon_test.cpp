// whatsapp end to end: the real daemon as a subprocess, every Cloud API
// fixture POSTed over real HTTP on loopback (with the fixture's own headers
// where it has them, else signed here with the fixture secret), the records
// read back from a memory-sink destination's output file, the quarantine
// found in the audit trail, and no value in the daemon's log.
#include "process.hpp"
#include "sink_records.hpp"

#include <switchboard/detail/json_record.hpp>

#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>

#include <catch2/catch.hpp>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using sbtest::Process;
using sbtest::TempDir;

namespace {

using sbtest::wait_until;

namespace fs = std::filesystem;
using Headers = std::vector<std::pair<std::string, std::string>>;

// The test-only Meta app secret of fixtures/README.md.
constexpr const char* kAppSecret = "fixture-meta-app-secret-NOT-REAL";
constexpr const char* kVerifyToken = "e2e-verify-token";


std::string fixture(const std::string& name) {
    return sbtest::read_file(fs::path(sbtest::env_or_fail("SB_FIXTURES")) / "whatsapp" / name);
}

Headers fixture_headers(const std::string& name) {
    Headers out;
    std::istringstream in(fixture(name));
    std::string line;
    std::getline(in, line); // the request line
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        out.emplace_back(line.substr(0, colon), value);
    }
    return out;
}

Headers signed_headers(const std::string& body) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), kAppSecret, static_cast<int>(std::strlen(kAppSecret)),
         reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
    std::string hex = "sha256=";
    char b[3];
    for (unsigned k = 0; k < len; ++k) {
        std::snprintf(b, sizeof b, "%02x", mac[k]);
        hex += b;
    }
    return {{"Content-Type", "application/json"}, {"X-Hub-Signature-256", hex}};
}

struct Http {
    int status;
    std::string body;
    std::string content_type;
};

Http request(int port, const std::string& method, const std::string& target,
             const std::string& body = {}, const Headers& headers = {}) {
    Poco::Net::HTTPClientSession session("127.0.0.1", static_cast<Poco::UInt16>(port));
    session.setTimeout(Poco::Timespan(5, 0));
    Poco::Net::HTTPRequest req(method, target, Poco::Net::HTTPMessage::HTTP_1_1);
    for (const auto& [k, v] : headers) req.set(k, v);
    if (method == "POST") req.setContentLength(static_cast<std::streamsize>(body.size()));
    session.sendRequest(req) << body;
    Poco::Net::HTTPResponse resp;
    std::istream& in = session.receiveResponse(resp);
    std::ostringstream out;
    out << in.rdbuf();
    return {static_cast<int>(resp.getStatus()), out.str(), resp.getContentType()};
}

using sbtest::Leaves;
using sbtest::sink_records;

const Leaves* with_text(const std::vector<Leaves>& records, const std::string& needle) {
    for (const auto& r : records) {
        auto it = r.find("fields.content.text");
        if (it != r.end() && it->second.find(needle) != std::string::npos) return &r;
    }
    return nullptr;
}



const char* const kPersonal[] = {"Okonkwo", "447700900123", "447700900778", "447700900779",
                                 "Green bin", "Pretend Lane", "QQ123456C", "Wiśniewska",
                                 "王秀英", "请问", "Dzień", "Bin still full", "300000000000001",
                                 kAppSecret, kVerifyToken};

} // namespace

TEST_CASE("whatsapp e2e: every Cloud API fixture over real HTTP; signatures, statuses, "
          "batches, media by reference, quarantine; nothing personal logged") {
    TempDir dir;
    // The fixtures are dated January 2025: the source keeps its records ten
    // years so that the core does not refuse them as already expired.
    auto config = dir.write("whatsapp.toml", R"(
[node]
data_dir = "data"
[sources.wa]
plugin = "whatsapp"
retention = "3650d"
[sources.wa.config]
app_secret = "env:SB_E2E_WA_APP_SECRET"
verify_token = "env:SB_E2E_WA_VERIFY_TOKEN"
max_body = "64KiB"
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
)");
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"},
                   {std::string("SB_E2E_WA_APP_SECRET=") + kAppSecret,
                    std::string("SB_E2E_WA_VERIFY_TOKEN=") + kVerifyToken});
    int port = sbtest::ready_port(daemon);
    const std::string hook = "/hooks/whatsapp/wa";
    fs::path sink = dir.path / "sink.jsonl";
    fs::path data = dir.path / "data";

    // Meta's subscription check.
    auto verify = request(port, "GET", hook + "?hub.mode=subscribe&hub.verify_token=" + kVerifyToken +
                                           "&hub.challenge=987654321");
    CHECK(verify.status == 200);
    CHECK(verify.body == "987654321");
    CHECK(request(port, "GET", hook + "?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1")
              .status == 403);

    // The fixture with the wrong signature is refused, and so is an unsigned one.
    std::string text = fixture("inbound_text.json");
    CHECK(request(port, "POST", hook, text, fixture_headers("inbound_text.BAD_SIGNATURE.headers.txt"))
              .status == 401);
    CHECK(request(port, "POST", hook, text, {{"Content-Type", "application/json"}}).status == 401);

    // A status first: if it made a record, that record would be delivered first.
    std::string status = fixture("status_delivered.json");
    auto st = request(port, "POST", hook, status, signed_headers(status));
    CHECK(st.status == 200);

    // The fixtures with their own signature headers, as Meta sent them.
    CHECK(request(port, "POST", hook, text, fixture_headers("inbound_text.headers.txt")).status == 200);
    std::string batched = fixture("inbound_unicode_nino_batched.json");
    CHECK(request(port, "POST", hook, batched,
                  fixture_headers("inbound_unicode_nino_batched.headers.txt"))
              .status == 200);
    // The others, signed here with the fixture secret.
    std::string image = fixture("inbound_image_with_caption.json");
    CHECK(request(port, "POST", hook, image, signed_headers(image)).status == 200);
    std::string malformed = fixture("malformed_missing_changes.json");
    auto bad = request(port, "POST", hook, malformed, signed_headers(malformed));
    CHECK(bad.status == 200);
    CHECK(bad.body.find("quarantined") != std::string::npos);
    // Meta redelivers the text: acknowledged, not stored twice.
    CHECK(request(port, "POST", hook, text, fixture_headers("inbound_text.headers.txt")).status == 200);
    // Larger than the plugin's max_body: 413.
    std::string huge(100u << 10, ' ');
    CHECK(request(port, "POST", hook, huge, signed_headers(huge)).status == 413);

    REQUIRE(wait_until([&] { return sink_records(sink).size() >= 4; }));
    REQUIRE(wait_until([&] { return sbtest::count_of(sbtest::audit_text(data), "\tquarantine\t") >= 1; }));
    std::this_thread::sleep_for(300ms); // time enough for a wrong extra record to show
    daemon.signal(SIGTERM);
    CHECK(daemon.wait(20s) == 0);

    auto records = sink_records(sink);
    REQUIRE(records.size() == 4); // text, Polish, Chinese, image; no status, no duplicate
    // Delivered in commit order: the status made nothing, so the text is first.
    CHECK(records[0].at("fields.content.text").find("Green bin not collected") == 0);

    const Leaves* t = with_text(records, "Green bin not collected again");
    REQUIRE(t);
    CHECK(t->at("fields.citizen.name") == "Dave Okonkwo-Hughes");
    CHECK(t->at("fields.contact.phone") == "447700900123");
    CHECK(t->at("fields.content.type") == "text");
    CHECK(t->at("meta.channel") == "whatsapp");
    CHECK(t->at("meta.occurred_at") == "2025-01-06T13:00:00.000Z");

    const Leaves* pl = with_text(records, "Dzień dobry");
    REQUIRE(pl);
    CHECK(pl->at("fields.citizen.name") == "Zofia Wiśniewska-Łęcka");
    // NINOs are not redacted at ingest (only card numbers are): the profile decides.
    CHECK(pl->at("fields.content.text") ==
          "Dzień dobry. Housing benefit form asks for NI no. Mine is QQ123456C — is that right format?");
    const Leaves* zh = with_text(records, "请问垃圾回收日期");
    REQUIRE(zh);
    CHECK(zh->at("fields.citizen.name") == "王秀英");
    CHECK(zh->at("fields.contact.phone") == "447700900779");

    const Leaves* img = with_text(records, "Bin still full");
    REQUIRE(img);
    CHECK(img->at("fields.content.type") == "image");
    CHECK(img->at("attachments[0].uri") == "whatsapp-media:300000000000001");
    CHECK(img->at("attachments[0].media_type") == "image/jpeg");
    CHECK(img->at("attachments[0].category") == "media.image");
    CHECK(img->at("attachments[0].sha256") == std::string(64, '0'));

    // One quarantine entry: the malformed body (ids and sizes only).
    std::string audit = sbtest::audit_text(data);
    CHECK(sbtest::count_of(audit, "\tquarantine\t") == 1);
    CHECK(sbtest::count_of(audit, "instance=wa;") == 1);
    CHECK(sbtest::count_of(audit, "\tingest\t") == 4);
    for (const char* v : kPersonal) {
        INFO(v);
        CHECK(daemon.err().find(v) == std::string::npos);
        CHECK(daemon.out().find(v) == std::string::npos);
        CHECK(audit.find(v) == std::string::npos);
    }
    CHECK(daemon.err().find("plugin[wa]: quarantined a POST of") != std::string::npos);
    CHECK(daemon.err().find("entry[0] has no changes array") != std::string::npos);
}

TEST_CASE("whatsapp e2e: also_via_landbot warns at start") {
    TempDir dir;
    auto config = dir.write("wa.toml", R"(
[node]
data_dir = "data"
[sources.wa]
plugin = "whatsapp"
[sources.wa.config]
app_secret = "env:SB_E2E_WA_APP_SECRET"
verify_token = "env:SB_E2E_WA_VERIFY_TOKEN"
also_via_landbot = true
)");
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"},
                   {std::string("SB_E2E_WA_APP_SECRET=") + kAppSecret,
                    std::string("SB_E2E_WA_VERIFY_TOKEN=") + kVerifyToken});
    REQUIRE(daemon.wait_for_log("core: ready", 20s));
    daemon.signal(SIGTERM);
    CHECK(daemon.wait(20s) == 0);
    CHECK(daemon.err().find("WARN  plugin[wa]: the same number is connected through Landbot") !=
          std::string::npos);
}
