// whatsapp through its built .so and the SDK harness, on the Cloud API
// fixtures: subscription check, signatures over the raw bytes, several
// entries/changes/messages per POST, statuses ignored, media by reference,
// malformed bodies quarantined, redeliveries de-duplicated.
#include <catch2/catch.hpp>

#include <switchboard/testing.hpp>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

using sb::testing::Harness;
using Headers = std::vector<std::pair<std::string, std::string>>;

// The test-only Meta app secret of fixtures/README.md.
constexpr const char* kAppSecret = "fixture-meta-app-secret-NOT-REAL";
constexpr const char* kVerifyToken = "verify-token-for-tests";
constexpr const char* kHook = "/hooks/whatsapp/test";

std::string env(const char* name) {
    const char* v = std::getenv(name);
    if (!v) FAIL(std::string(name) + " is not set (run through meson test)");
    return v;
}

std::string module() { return env("SB_PLUGIN_DIR") + "/sources/whatsapp/whatsapp.so"; }

std::string fixture(const std::string& name) {
    std::ifstream in(env("SB_FIXTURES") + "/whatsapp/" + name, std::ios::binary);
    REQUIRE(in);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// The header lines of a *.headers.txt fixture (after the request line).
Headers fixture_headers(const std::string& name) {
    Headers out;
    std::istringstream in(fixture(name));
    std::string line;
    std::getline(in, line); // POST /hooks/whatsapp HTTP/1.1
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

std::string sign(const std::string& body, const std::string& secret = kAppSecret) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
    std::string hex = "sha256=";
    char b[3];
    for (unsigned k = 0; k < len; ++k) {
        std::snprintf(b, sizeof b, "%02x", mac[k]);
        hex += b;
    }
    return hex;
}

Headers signed_headers(const std::string& body) {
    return {{"Content-Type", "application/json"}, {"X-Hub-Signature-256", sign(body)}};
}

std::unique_ptr<Harness> started(std::vector<std::pair<std::string, std::string>> extra = {}) {
    ::setenv("WA_TEST_APP_SECRET", kAppSecret, 1);
    ::setenv("WA_TEST_VERIFY_TOKEN", kVerifyToken, 1);
    auto h = std::make_unique<Harness>(module());
    h->config("app_secret", "\"env:WA_TEST_APP_SECRET\"")
        .config("verify_token", "\"env:WA_TEST_VERIFY_TOKEN\"");
    for (auto& [k, v] : extra) h->config(k, v);
    REQUIRE(h->create() == SB_OK);
    REQUIRE(h->start() == SB_OK);
    return h;
}

const sb::testing::TestRecord& by_external_id(Harness& h, const std::string& id) {
    for (const auto& r : h.emitted())
        if (r.meta(SB_META_EXTERNAL_ID) == id) return r;
    FAIL("no record with external_id " + id);
    throw;
}

const char* const kPersonal[] = {"Okonkwo", "447700900123", "447700900778", "447700900779",
                                 "Green bin", "Pretend Lane", "QQ123456C", "Wiśniewska",
                                 "王秀英", "请问", "Dzień", "Bin still full", "300000000000001",
                                 kAppSecret, kVerifyToken};

void no_personal_data_logged(Harness& h) {
    for (const char* v : kPersonal) {
        INFO(v);
        CHECK_FALSE(h.logged(v));
    }
    for (const auto& q : h.quarantined())
        for (const char* v : kPersonal) {
            INFO(q.reason);
            CHECK(q.reason.find(v) == std::string::npos);
        }
}

} // namespace

TEST_CASE("whatsapp: the route, the descriptor and config") {
    auto h = started();
    CHECK(h->routes() == std::vector<std::string>{"* /hooks/whatsapp/test"});
    CHECK(h->http("GET", "/hooks/whatsapp/test/extra").status == 404);
    auto put = h->http("PUT", kHook, "{}");
    CHECK(put.status == 405);
    CHECK(put.headers["Allow"] == "GET, POST");
    // Secrets must be references, and both are required.
    Harness plain(module());
    plain.config("app_secret", "\"literal\"").config("verify_token", "\"env:WA_TEST_VERIFY_TOKEN\"");
    CHECK_THROWS(plain.create());
    Harness missing(module());
    missing.config("app_secret", "\"env:WA_TEST_APP_SECRET\"");
    CHECK_THROWS_WITH(missing.create(), Catch::Contains("verify_token"));
}

TEST_CASE("whatsapp: the subscription check echoes hub.challenge only for our verify token") {
    auto h = started();
    auto ok = h->http("GET", std::string(kHook) + "?hub.mode=subscribe&hub.verify_token=" +
                                 "verify%2Dtoken-for-tests&hub.challenge=1158201444");
    CHECK(ok.status == 200);
    CHECK(ok.body == "1158201444");
    CHECK(ok.content_type == "text/plain");
    CHECK(h->http("GET", std::string(kHook) +
                             "?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1")
              .status == 403);
    CHECK(h->http("GET", std::string(kHook) +
                             "?hub.mode=unsubscribe&hub.verify_token=verify-token-for-tests&hub.challenge=1")
              .status == 403);
    CHECK(h->http("GET", std::string(kHook) + "?hub.mode=subscribe&hub.verify_token=verify-token-for-tests")
              .status == 403);
    CHECK(h->http("GET", kHook).status == 403);
    CHECK(h->counter("verify_ok") == 1);
    CHECK(h->counter("verify_refused") == 4);
    CHECK(h->emitted().empty());
    no_personal_data_logged(*h);
}

TEST_CASE("whatsapp: inbound text with the fixture's signature becomes one record") {
    auto h = started();
    auto reply = h->http("POST", kHook, fixture("inbound_text.json"),
                         fixture_headers("inbound_text.headers.txt"));
    CHECK(reply.status == 200);
    REQUIRE(h->emitted().size() == 1);
    const auto& r = h->emitted()[0];
    CHECK(r.meta(SB_META_CHANNEL) == "whatsapp");
    CHECK(r.meta(SB_META_EXTERNAL_ID) == "wamid.FAKE0000000000000000000000000000000001");
    CHECK(r.meta(SB_META_SUBJECT_REF) == "447700900123");
    CHECK(r.meta(SB_META_OCCURRED_AT) == "2025-01-06T13:00:00.000Z");
    CHECK(r.value("citizen.name") == "Dave Okonkwo-Hughes");
    CHECK(r.category("citizen.name") == "identity.name");
    CHECK(r.value("contact.phone") == "447700900123");
    CHECK(r.category("contact.phone") == "contact.phone");
    CHECK(r.value("content.text") ==
          "Green bin not collected again at 5 Pretend Lane L4 0XX. Third time this month!");
    CHECK(r.category("content.text") == "content.free_text");
    CHECK(r.value("content.type") == "text");
    CHECK(r.category("content.type") == "content.meta");
    CHECK(r.value("hints.business_number") == "441514960100");
    CHECK(r.category("hints.business_number") == "classification.hint");
    CHECK(r.value("vendor.phone_number_id") == "200000000000001");
    CHECK(r.category("vendor.phone_number_id") == "vendor.id");
    CHECK(r.attachments().empty());
    CHECK(h->quarantined().empty());
    CHECK(h->counter("messages_emitted") == 1);
    no_personal_data_logged(*h);
}

TEST_CASE("whatsapp: signatures are checked over the raw bytes, in full, before parsing") {
    auto h = started();
    std::string body = fixture("inbound_text.json");
    // The fixture's BAD_SIGNATURE headers.
    CHECK(h->http("POST", kHook, body, fixture_headers("inbound_text.BAD_SIGNATURE.headers.txt"))
              .status == 401);
    // No signature at all.
    CHECK(h->http("POST", kHook, body, {{"Content-Type", "application/json"}}).status == 401);
    // The right signature for other bytes (the final newline dropped).
    CHECK(h->http("POST", kHook, body.substr(0, body.size() - 1),
                  fixture_headers("inbound_text.headers.txt"))
              .status == 401);
    // Signed with another secret; truncated; not hex; other algorithm prefix.
    auto good = sign(body);
    for (const std::string& bad : {sign(body, "another-secret"), good.substr(0, good.size() - 2),
                                   "sha256=" + std::string(64, 'g'), "sha1=" + good.substr(7),
                                   good.substr(7)}) {
        INFO(bad);
        CHECK(h->http("POST", kHook, body, {{"X-Hub-Signature-256", bad}}).status == 401);
    }
    // Even a body that is not JSON: refused as unauthenticated, never parsed nor kept.
    CHECK(h->http("POST", kHook, "{not json", {{"X-Hub-Signature-256", sign("other")}}).status == 401);
    CHECK(h->emitted().empty());
    CHECK(h->quarantined().empty());
    CHECK(h->counter("signature_missing") == 1);
    CHECK(h->counter("signature_bad") == 8);
    // Upper-case hex is the same signature.
    std::string upper = good;
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    upper.replace(0, 7, "sha256=");
    CHECK(h->http("POST", kHook, body, {{"X-Hub-Signature-256", upper}}).status == 200);
    CHECK(h->emitted().size() == 1);
}

TEST_CASE("whatsapp: an image is kept by reference with its caption as the text") {
    auto h = started();
    std::string body = fixture("inbound_image_with_caption.json");
    REQUIRE(h->http("POST", kHook, body, signed_headers(body)).status == 200);
    REQUIRE(h->emitted().size() == 1);
    const auto& r = h->emitted()[0];
    CHECK(r.meta(SB_META_EXTERNAL_ID) == "wamid.FAKE0000000000000000000000000000000002");
    CHECK(r.meta(SB_META_OCCURRED_AT) == "2025-01-06T13:01:01.000Z");
    CHECK(r.value("content.text") == "Bin still full, photo taken this morning");
    CHECK(r.value("content.type") == "image");
    REQUIRE(r.attachments().size() == 1);
    const auto& a = r.attachments()[0];
    CHECK(a.name == "image");
    CHECK(a.uri == "whatsapp-media:300000000000001");
    CHECK(a.media_type == "image/jpeg");
    CHECK(a.sha256 == std::string(64, '0'));
    CHECK(a.size == -1);
    CHECK(a.category == "media.image");
    no_personal_data_logged(*h);
}

TEST_CASE("whatsapp: a delivery status is acknowledged and counted, never a record") {
    auto h = started();
    std::string body = fixture("status_delivered.json");
    auto reply = h->http("POST", kHook, body, signed_headers(body));
    CHECK(reply.status == 200);
    CHECK(reply.body.find("\"statuses\":1") != std::string::npos);
    CHECK(h->emitted().empty());
    CHECK(h->quarantined().empty());
    CHECK(h->counter("statuses_ignored") == 1);
}

TEST_CASE("whatsapp: two contacts and two messages in one delivery, unicode and NINO intact") {
    auto h = started();
    auto reply = h->http("POST", kHook, fixture("inbound_unicode_nino_batched.json"),
                         fixture_headers("inbound_unicode_nino_batched.headers.txt"));
    CHECK(reply.status == 200);
    REQUIRE(h->emitted().size() == 2);
    const auto& pl = by_external_id(*h, "wamid.FAKE0000000000000000000000000000000003");
    CHECK(pl.value("citizen.name") == "Zofia Wiśniewska-Łęcka");
    CHECK(pl.value("contact.phone") == "447700900778");
    // The core redacts card numbers at ingest, not NINOs: the text is as sent.
    CHECK(pl.value("content.text") ==
          "Dzień dobry. Housing benefit form asks for NI no. Mine is QQ123456C — is that right format?");
    CHECK(pl.meta(SB_META_OCCURRED_AT) == "2025-01-06T13:10:00.000Z");
    const auto& zh = by_external_id(*h, "wamid.FAKE0000000000000000000000000000000004");
    CHECK(zh.value("citizen.name") == "王秀英");
    CHECK(zh.value("contact.phone") == "447700900779");
    CHECK(zh.meta(SB_META_SUBJECT_REF) == "447700900779");
    CHECK(zh.value("content.text") == "请问垃圾回收日期? (bin day for 31 Madeup Street L1 0AA)");
    CHECK(zh.meta(SB_META_OCCURRED_AT) == "2025-01-06T13:10:02.000Z");
    no_personal_data_logged(*h);
}

TEST_CASE("whatsapp: a wrong structure is quarantined and acknowledged (Meta would resend it)") {
    auto h = started();
    std::string body = fixture("malformed_missing_changes.json");
    auto reply = h->http("POST", kHook, body, signed_headers(body));
    CHECK(reply.status == 200);
    CHECK(reply.body.find("\"status\":\"quarantined\"") != std::string::npos);
    CHECK(h->emitted().empty());
    REQUIRE(h->quarantined().size() == 1);
    CHECK(h->quarantined()[0].bytes == body);
    CHECK(h->quarantined()[0].reason == "entry[0] has no changes array");
    CHECK(h->counter("bodies_quarantined") == 1);

    // Malformed JSON, signed: the same.
    std::string cut = fixture("inbound_text.json").substr(0, 200);
    reply = h->http("POST", kHook, cut, signed_headers(cut));
    CHECK(reply.status == 200);
    REQUIRE(h->quarantined().size() == 2);
    CHECK(h->quarantined()[1].reason.find("not valid JSON: ") == 0);
    // Not a WhatsApp envelope at all.
    std::string other = R"({"object":"page","entry":[]})";
    CHECK(h->http("POST", kHook, other, signed_headers(other)).status == 200);
    CHECK(h->quarantined()[2].reason == "object is not \"whatsapp_business_account\"");
    std::string scalar = R"({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":"x"}]}]})";
    CHECK(h->http("POST", kHook, scalar, signed_headers(scalar)).status == 200);
    CHECK(h->quarantined()[3].reason == "entry[0].changes[0] has no value object");
    std::string nofield = R"({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"value":{"a":1}}]}]})";
    CHECK(h->http("POST", kHook, nofield, signed_headers(nofield)).status == 200);
    CHECK(h->quarantined()[4].reason == "entry[0].changes[0] has no field");
    CHECK(h->emitted().empty());
    no_personal_data_logged(*h);
}

TEST_CASE("whatsapp: several entries and changes per POST; other fields and numbers; odd messages") {
    auto h = started({{"phone_number_id", "[\"200000000000001\"]"}});
    std::string body = R"({"object":"whatsapp_business_account","entry":[
 {"id":"1","changes":[
   {"field":"messages","value":{"messaging_product":"whatsapp",
     "metadata":{"display_phone_number":"441514960100","phone_number_id":"200000000000001"},
     "contacts":[{"profile":{"name":"Canary One"},"wa_id":"447700900001"}],
     "messages":[{"from":"447700900001","id":"wamid.A","timestamp":"1736168400","type":"text","text":{"body":"Canary text A"}},
                 {"from":"447700900001","id":"wamid.B","timestamp":"1736168401","type":"audio","audio":{"id":"m-voice","mime_type":"audio/ogg; codecs=opus","sha256":"not-hex","voice":true}},
                 {"from":"447700900001","id":"wamid.C","timestamp":"1736168402","type":"location","location":{"latitude":53.4,"longitude":-2.9}},
                 {"from":"447700900001","id":"wamid.D","timestamp":"1736168403","type":"reaction","reaction":{"message_id":"wamid.X","emoji":"+"}},
                 {"from":"447700900001","timestamp":"1736168404","type":"text","text":{"body":"Canary no id"}}]}},
   {"field":"account_update","value":{"event":"VERIFIED_ACCOUNT"}}]},
 {"id":"2","changes":[
   {"field":"messages","value":{"messaging_product":"whatsapp",
     "metadata":{"display_phone_number":"441514960999","phone_number_id":"200000000000009"},
     "messages":[{"from":"447700900002","id":"wamid.E","timestamp":"1736168405","type":"text","text":{"body":"Canary other number"}}]}},
   {"field":"messages","value":{"messaging_product":"whatsapp",
     "metadata":{"display_phone_number":"441514960100","phone_number_id":"200000000000001"},
     "messages":[{"from":"447700900003","id":"wamid.F","timestamp":1736168406,"type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"b1","title":"Canary button"}}},
                 {"from":"447700900003","id":"wamid.G","timestamp":"1736168407","type":"document","document":{"id":"m-doc","mime_type":"application/pdf","caption":"Canary caption","filename":"Canary.pdf"}}]}}]}]})";
    auto reply = h->http("POST", kHook, body, signed_headers(body));
    CHECK(reply.status == 200);
    REQUIRE(h->emitted().size() == 4);
    const auto& a = by_external_id(*h, "wamid.A");
    CHECK(a.value("citizen.name") == "Canary One");
    const auto& b = by_external_id(*h, "wamid.B");
    REQUIRE(b.attachments().size() == 1);
    CHECK(b.attachments()[0].uri == "whatsapp-media:m-voice");
    CHECK(b.attachments()[0].category == "media.voice");
    CHECK(b.attachments()[0].sha256.empty()); // not in the documented form: left out
    CHECK_FALSE(b.has("content.text"));
    const auto& f = by_external_id(*h, "wamid.F");
    CHECK(f.value("content.text") == "Canary button");
    CHECK(f.meta(SB_META_OCCURRED_AT) == "2025-01-06T13:00:06.000Z");
    CHECK_FALSE(f.has("citizen.name")); // no contact given for this sender
    const auto& g = by_external_id(*h, "wamid.G");
    CHECK(g.attachments()[0].category == "media.document");
    CHECK(g.value("content.text") == "Canary caption");
    // The location and the message without an id are kept in the quarantine
    // (once, the whole body); the reaction, the other number and the other
    // field are counted.
    REQUIRE(h->quarantined().size() == 1);
    CHECK(h->quarantined()[0].reason ==
          "entry[0].changes[0].value.messages[2]: message type \"location\" is not mapped; "
          "entry[0].changes[0].value.messages[4]: id, from or timestamp missing or malformed");
    CHECK(h->counter("reactions_ignored") == 1);
    CHECK(h->counter("changes_other_number") == 1);
    CHECK(h->counter("changes_ignored") == 1);
    CHECK(h->counter("messages_emitted") == 4);
    CHECK_FALSE(h->logged("Canary"));
}

TEST_CASE("whatsapp: redeliveries are acknowledged without a second record") {
    auto h = started();
    std::string body = fixture("inbound_text.json");
    auto headers = fixture_headers("inbound_text.headers.txt");
    REQUIRE(h->http("POST", kHook, body, headers).status == 200);
    auto again = h->http("POST", kHook, body, headers);
    CHECK(again.status == 200);
    CHECK(again.body.find("\"duplicates\":1") != std::string::npos);
    CHECK(h->emitted().size() == 1);
    CHECK(h->counter("messages_duplicate") == 1);
    // After an erase the burst guard forgets the id; the journal still answers duplicate.
    CHECK(h->erase(h->emitted()[0]) == SB_OK);
    CHECK(h->counter("erase_recent_ids_dropped") == 1);
    CHECK(h->http("POST", kHook, body, headers).status == 200);
    CHECK(h->emitted().size() == 1);
    CHECK(h->counter("messages_duplicate") == 2);
}

TEST_CASE("whatsapp: not committed means 503, so that Meta delivers again") {
    auto h = started();
    std::string body = fixture("inbound_text.json");
    auto headers = fixture_headers("inbound_text.headers.txt");
    h->journal_available(false);
    CHECK(h->http("POST", kHook, body, headers).status == 503);
    CHECK(h->counter("emit_unavailable") == 1);
    h->journal_available(true);
    CHECK(h->http("POST", kHook, body, headers).status == 200);
    CHECK(h->emitted().size() == 1);
}

TEST_CASE("whatsapp: oversized bodies get 413 and are not kept") {
    auto h = started({{"max_body", "\"1KiB\""}});
    std::string body = fixture("inbound_unicode_nino_batched.json"); // 1331 bytes
    auto reply = h->http("POST", kHook, body, signed_headers(body));
    CHECK(reply.status == 413);
    CHECK(h->emitted().empty());
    CHECK(h->quarantined().empty());
    CHECK(h->counter("bodies_oversized") == 1);
}

TEST_CASE("whatsapp: also_via_landbot warns at start; erase answers SB_OK") {
    auto h = started({{"also_via_landbot", "true"}});
    bool warned = false;
    for (const auto& l : h->logs())
        if (l.level == SB_LOG_WARN &&
            l.message.find("the same number is connected through Landbot") != std::string::npos)
            warned = true;
    CHECK(warned);
    auto quiet = started();
    for (const auto& l : quiet->logs()) CHECK(l.message.find("Landbot") == std::string::npos);
    std::string body = fixture("inbound_text.json");
    REQUIRE(quiet->http("POST", kHook, body, signed_headers(body)).status == 200);
    CHECK(quiet->erase(quiet->emitted()[0]) == SB_OK);
    CHECK(quiet->counter("erase_requests") == 1);
}
