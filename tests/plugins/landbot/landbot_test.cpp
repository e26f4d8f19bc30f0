// landbot through its built .so and the SDK harness (fake clock, in-process
// host): authentication, every Landbot fixture, conversations assembled and
// closed, redaction before anything is stored, deduplication, durability
// across restarts and failed commits, and the erase hook against a local
// HTTP server playing the Landbot API. Also the plugin's pure parts
// (redaction, de-mangling) directly.
#include "fake_landbot_api.hpp"

#include "../../../plugins/sources/landbot/conversation.hpp"
#include "../../../plugins/sources/landbot/delivery.hpp"
#include "../../../plugins/sources/landbot/redact.hpp"

#include <catch2/catch.hpp>

#include <switchboard/testing.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using sb::testing::Harness;
using Headers = std::vector<std::pair<std::string, std::string>>;
using Config = std::vector<std::pair<std::string, std::string>>;

const char* const kToken = "fixture-landbot-hook-token-NOT-REAL";
const char* const kPath = "/hooks/landbot/test";
constexpr std::int64_t kMinute = 60'000;

std::string module() {
    const char* dir = std::getenv("SB_PLUGIN_DIR");
    if (!dir) FAIL("SB_PLUGIN_DIR is not set (run through meson test)");
    return std::string(dir) + "/sources/landbot/landbot.so";
}

std::string fixture(const std::string& name) {
    const char* dir = std::getenv("SB_FIXTURES");
    if (!dir) FAIL("SB_FIXTURES is not set (run through meson test)");
    std::ifstream in(std::string(dir) + "/landbot/" + name, std::ios::binary);
    REQUIRE(in.good());
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::vector<std::string> fixture_lines(const std::string& name) {
    std::istringstream in(fixture(name));
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);)
        if (!l.empty()) out.push_back(l);
    return out;
}

// The headers of a *.headers.txt file (its first line is the request line).
Headers fixture_headers(const std::string& name) {
    std::istringstream in(fixture(name));
    Headers out;
    std::string l;
    std::getline(in, l);
    while (std::getline(in, l)) {
        if (!l.empty() && l.back() == '\r') l.pop_back();
        auto colon = l.find(':');
        if (colon == std::string::npos) continue;
        std::string v = l.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.erase(0, 1);
        out.emplace_back(l.substr(0, colon), v);
    }
    return out;
}

Headers auth(const std::string& trace = {}) {
    Headers h{{"Authorization", std::string("Token ") + kToken}, {"User-Agent", "landbot/webhooks"}};
    if (!trace.empty()) h.emplace_back("sentry-trace", trace);
    return h;
}

struct Env {
    Env() {
        ::setenv("LANDBOT_TEST_HOOK_TOKEN", kToken, 1);
        ::setenv("LANDBOT_TEST_AGENT_TOKEN", "agent-token-NOT-REAL", 1);
    }
};

// A harness with the hook token configured and (optionally) more keys.
struct Plugin {
    Env env;
    Harness h{module()};
    explicit Plugin(Config extra = {}, bool go = true) {
        h.config("token", "\"env:LANDBOT_TEST_HOOK_TOKEN\"");
        for (auto& [k, v] : extra) h.config(k, v);
        if (go) {
            REQUIRE(h.create() == SB_OK);
            REQUIRE(h.start() == SB_OK);
        }
    }
    sb::testing::HttpReply post(const std::string& body, const Headers& headers) {
        return h.http("POST", kPath, body, headers);
    }
    // Every value the plugin keeps in durable state, concatenated.
    std::string state_bytes() {
        std::string all;
        for (const auto& [k, v] : h.state()) all += k + "=" + v + "\n";
        return all;
    }
    const sb::testing::TestRecord& only_record() {
        REQUIRE(h.emitted().size() == 1);
        return h.emitted().front();
    }
};

bool nothing_personal_logged(const Harness& h, std::initializer_list<const char*> values) {
    for (const char* v : values)
        if (h.logged(v)) {
            UNSCOPED_INFO("logged: " << v);
            return false;
        }
    return true;
}

} // namespace

// --- the pure parts ---------------------------------------------------------

TEST_CASE("redact: card numbers (Luhn, groupings), CVV and expiry, NINOs; other numbers stay") {
    using landbot::redact;
    CHECK(redact("card is 4111 1111 1111 1111 exp 09/29 cvv 123") ==
          "card is [CARD] exp [EXPIRY] cvv [CVV]");
    CHECK(redact("4111111111111111") == "[CARD]");
    CHECK(redact("4111-1111-1111-1111 09/29 123") == "[CARD] [EXPIRY] [CVV]");
    CHECK(redact("amex 3782 822463 10005.") == "amex [CARD].");
    CHECK(redact("pay with 5555 5555 5555 4444, thanks") == "pay with [CARD], thanks");
    // Luhn-invalid, too short, or starting with 1 (timestamps, ids): kept.
    CHECK(redact("4111 1111 1111 1112") == "4111 1111 1111 1112");
    CHECK(redact("ts 1736161200100321 id 500100512") == "ts 1736161200100321 id 500100512");
    CHECK(redact("5c0e0000-0000-4000-8000-000000000101") == "5c0e0000-0000-4000-8000-000000000101");
    CHECK(redact("call 0151 496 0732 or 07700 900461") == "call 0151 496 0732 or 07700 900461");
    CHECK(redact("claim ref HB/0000-7731 and £42.10") == "claim ref HB/0000-7731 and £42.10");
    // A number after the card but not straight after it is not a CVV.
    CHECK(redact("card 4111111111111111 and I owe 123 pounds") ==
          "card [CARD] and I owe 123 pounds");
    CHECK(redact("the security code is 987") == "the security code is [CVV]");
    CHECK(redact("CVV: 1234") == "CVV: [CVV]");
    CHECK(redact("expiry date 12/2027") == "expiry date [EXPIRY]");
    CHECK(redact("version 10/12 of the form") == "version 10/12 of the form");

    landbot::RedactCounts c;
    std::vector<std::string> ninos;
    CHECK(redact("my NI number is QQ 12 34 56 C, or qq123456c", &c, &ninos) ==
          "my NI number is [NINO], or [NINO]");
    CHECK(c.nino == 2);
    CHECK(ninos == std::vector<std::string>{"QQ123456C", "QQ123456C"});
    CHECK(redact("QQ 123456 C") == "[NINO]");
    CHECK(redact("XQQ123456C") == "XQQ123456C"); // inside a word
    CHECK(redact("QQ123456E") == "QQ123456E");   // suffix is A-D
    // Unicode passes through untouched.
    CHECK(redact("Dia duit — Siobhán 🌻") == "Dia duit — Siobhán 🌻");
    // Cards only.
    CHECK(redact("QQ123456C 4111111111111111", nullptr, nullptr, {true, false}) == "QQ123456C [CARD]");
}

TEST_CASE("redacted_prefix: bounded, never ends in a cut-off digit run") {
    std::string raw = "{\"body\":\"card 4111 1111 1111 1111\"}";
    // A cut inside the card number drops the digits before the cut.
    std::string head = landbot::redacted_prefix(raw, 24);
    CHECK(head == "{\"body\":\"card");
    CHECK(landbot::redacted_prefix(raw, 1000) == "{\"body\":\"card [CARD]\"}");
}

TEST_CASE("demangle: Python reprs of lists, booleans and None from Landbot custom fields") {
    auto str = [](std::string s) {
        landbot::Val v;
        v.type = SB_VALUE_STRING;
        v.s = std::move(s);
        return landbot::demangle(v);
    };
    auto l = str("['council tax', 'moving home']");
    REQUIRE(l.kind == landbot::Custom::Kind::List);
    CHECK(l.list == std::vector<std::string>{"council tax", "moving home"});
    CHECK(str("[\"a\", 'b\\'c', 3]").list == std::vector<std::string>{"a", "b'c", "3"});
    CHECK(str("True").kind == landbot::Custom::Kind::Bool);
    CHECK(str("True").b);
    CHECK_FALSE(str("false").b);
    CHECK(str("None").kind == landbot::Custom::Kind::Null);
    CHECK(str("[]").kind == landbot::Custom::Kind::Null);
    CHECK(str("").kind == landbot::Custom::Kind::Null);
    auto broken = str("['unclosed");
    CHECK(broken.kind == landbot::Custom::Kind::String);
    CHECK(broken.s == "['unclosed");
    CHECK(str(" L8 0ZZ ").s == "L8 0ZZ");
}

TEST_CASE("conversation state round-trips through its JSON form") {
    landbot::Conversation c;
    c.cid = "500100512";
    c.opened_ms = 1;
    c.last_ms = 2;
    c.snap_us = 3;
    c.next_n = 2;
    c.name = "Gareth \"G\" Pryce-Oduya";
    c.mapped.push_back({"citizen.address.postcode", "contact.postcode", false, "L8 0ZZ", false});
    c.mapped.push_back({"flags.consent", "operational.consent", true, "", true});
    c.hints = {"a", "b"};
    c.defects = {"x"};
    landbot::Turn t;
    t.id = "u1";
    t.trace = "tr";
    t.ts_us = 1736161200100321;
    t.seq = 4;
    t.type = "text";
    t.author = "citizen";
    t.text = "line\nbreak ✓";
    t.channel = "web_chat";
    c.turns.push_back(t);
    c.recent.push_back({"u:old", 99});
    landbot::Conversation back;
    std::string error;
    REQUIRE(landbot::from_json(landbot::to_json(c), back, error));
    CHECK(landbot::to_json(back) == landbot::to_json(c));
    CHECK_FALSE(landbot::from_json("{\"v\":2,\"cid\":\"1\"}", back, error));
    CHECK(error == "conversation state has an unknown version");
}

// --- configuration and authentication -------------------------------------

TEST_CASE("the plugin registers its hook under the instance name and refuses bad config") {
    Plugin p;
    CHECK(p.h.routes() == std::vector<std::string>{"POST /hooks/landbot/test"});

    for (auto [key, value, why] : std::vector<std::tuple<std::string, std::string, std::string>>{
             {"field_map", "[\"postcode\"]", "expected custom_field=record.path:category"},
             {"field_map", "[\"postcode=content.text:contact.postcode\"]", "fills itself"},
             {"field_map", "[\"postcode=a..b:contact.postcode\"]", "dotted keys"},
             {"field_map", "[\"postcode=a.b:Bad-Cat\"]", "[a-z0-9_.]+"},
             {"field_map", "[\"a=x.y:c.d\", \"a=x.z:c.d\"]", "mapped twice"},
             {"hint_fields", "[\"enquiry topic\"]", "custom field names"},
             {"api_base", "\"ftp://example.org\"", "http or https"}}) {
        INFO(key << " " << value);
        Plugin bad(Config{{key, value}}, false);
        CHECK(bad.h.create() == SB_ERR_INVALID);
        CHECK(bad.h.last_error().find(why) != std::string::npos);
    }
    // A literal secret is refused by the host's schema check.
    Env env;
    Harness literal(module());
    literal.config("token", "\"fixture-landbot-hook-token-NOT-REAL\"");
    CHECK_THROWS(literal.create());
}

TEST_CASE("deliveries without the right token are refused 401 and nothing is kept") {
    Plugin p;
    std::string body = fixture("platform_web_text_customer.json");
    CHECK(p.post(body, {}).status == 401);
    CHECK(p.post(body, {{"Authorization", "Token wrong"}}).status == 401);
    CHECK(p.post(body, {{"Authorization", std::string("Bearer ") + kToken}}).status == 401);
    CHECK(p.post(body, {{"Authorization", std::string("Token ") + kToken + "x"}}).status == 401);
    CHECK(p.post(body, {{"Authorization", "Token"}}).status == 401);
    auto refused = p.post(body, {{"Authorization", "Token wrong"}});
    CHECK(refused.headers.count("WWW-Authenticate") == 1);
    CHECK(p.h.state().empty());
    CHECK(p.h.quarantined().empty());
    CHECK(p.h.counter("deliveries_unauthorized") == 6);
    CHECK_FALSE(p.h.logged(kToken));
    CHECK_FALSE(p.h.logged("Token wrong"));
    CHECK_FALSE(p.h.logged("Bearer"));
}

// --- fixtures ---------------------------------------------------------------

TEST_CASE("web text fixture: one conversation record after the quiet period, with the mapped "
          "custom fields") {
    Plugin p;
    auto reply = p.post(fixture("platform_web_text_customer.json"),
                        fixture_headers("platform_web_text_customer.headers.txt"));
    CHECK(reply.status == 200);
    CHECK(reply.body == "{\"status\":\"accepted\",\"messages\":1,\"duplicates\":0}");
    // Durable before the answer; not a record yet.
    CHECK(p.h.state().count("conv:500100201") == 1);
    CHECK(p.h.state().count("index") == 1);
    CHECK(p.h.emitted().empty());
    p.h.advance(29 * kMinute);
    CHECK(p.h.emitted().empty());
    p.h.advance(1 * kMinute + 1000);
    const auto& r = p.only_record();
    CHECK(r.meta("channel") == "web_chat");
    CHECK(r.meta("occurred_at") == "2025-01-06T09:01:01.482Z");
    CHECK(r.meta("external_id") == "landbot:500100201:0b6f4a52-3c1e-4e0a-9a51-7d2f7c1e0001");
    CHECK(r.meta("subject_ref") == "500100201");
    // "Visitor #48213" is Landbot's label for an anonymous visitor, not a name.
    CHECK_FALSE(r.has("citizen.name"));
    CHECK(r.value("citizen.address.postcode") == "L8 0ZZ");
    CHECK(r.category("citizen.address.postcode") == "contact.postcode");
    CHECK(r.value("hints.topic") == "bins-and-recycling");
    CHECK(r.category("hints.topic") == "classification.hint");
    CHECK(r.value("hints.channel") == "Council web chat");
    CHECK(r.value("content.turns[0].author") == "citizen");
    CHECK(r.category("content.turns[0].author") == "content.meta");
    CHECK(r.value("content.turns[0].at") == "2025-01-06T09:01:01.482Z");
    CHECK(r.value("content.turns[0].type") == "text");
    CHECK(r.value("content.turns[0].text") ==
          "Hi, my blue recycling bin wasn't emptied on Tuesday. Can someone come back for it?");
    CHECK(r.category("content.turns[0].text") == "content.free_text");
    CHECK(r.value("content.closed_by") == "quiet");
    CHECK(r.value("vendor.customer_id") == "500100201");
    CHECK(r.category("vendor.customer_id") == "vendor.id");
    CHECK(r.value("vendor.channel_id") == "3000001");
    CHECK_FALSE(r.has("contact.phone"));
    CHECK_FALSE(r.has("defects[0]"));
    // Every field has a real category.
    for (const auto& f : r.fields()) {
        INFO(f.path);
        CHECK(f.category != "unknown");
    }
    // Closed: the open conversation is gone from state; only the dedupe
    // keys stay until the window passes, then the key and index entry go.
    CHECK(p.state_bytes().find("recycling") == std::string::npos);
    p.h.advance(61 * kMinute);
    CHECK(p.h.state().count("conv:500100201") == 0);
    CHECK(p.h.state().count("index") == 0);
    CHECK(nothing_personal_logged(p.h, {"recycling", "L8 0ZZ", "Visitor", "500100201",
                                        "bins-and-recycling"}));
}

TEST_CASE("WhatsApp fixtures: customer message and bot reply form one conversation, in time "
          "order, with the de-mangled list field as hints") {
    Plugin p(Config{{"hint_fields", "[\"enquiry_topic\", \"topics_selected\"]"},
              {"field_map", "[\"consent_given=flags.consent:operational.consent\"]"}});
    // The bot's reply arrives first (out of order); the timestamps decide.
    CHECK(p.post(fixture("platform_bot_reply_whatsapp.json"), auth("trace-bot")).status == 200);
    CHECK(p.post(fixture("platform_whatsapp_customer_unicode.json"),
                 fixture_headers("platform_whatsapp_customer_unicode.headers.txt"))
              .status == 200);
    p.h.advance(31 * kMinute);
    const auto& r = p.only_record();
    CHECK(r.meta("channel") == "whatsapp");
    CHECK(r.meta("occurred_at") == "2025-01-06T10:01:42.000Z");
    CHECK(r.meta("external_id") == "landbot:500100377:0b6f4a52-3c1e-4e0a-9a51-7d2f7c1e0002");
    CHECK(r.value("citizen.name") == "Siobhán Ní Bhriain 🌻");
    CHECK(r.category("citizen.name") == "identity.name");
    CHECK(r.value("contact.phone") == "447700900461");
    CHECK(r.category("contact.phone") == "contact.phone");
    CHECK(r.value("hints.topic") == "council tax");
    CHECK(r.value("hints.topics[0]") == "council tax");
    CHECK(r.value("hints.topics[1]") == "moving home");
    // "true" (a string) becomes a boolean.
    CHECK(r.field("flags.consent")->type == SB_VALUE_BOOL);
    CHECK(r.value("flags.consent") == "true");
    CHECK(r.category("flags.consent") == "operational.consent");
    CHECK(r.value("content.turns[0].author") == "citizen");
    CHECK(r.value("content.turns[0].text").find("Dia duit") == 0);
    CHECK(r.value("content.turns[1].author") == "bot");
    CHECK(r.value("content.turns[1].at") == "2025-01-06T10:01:43.118Z");
    CHECK_FALSE(r.has("agent.id"));
    // The preferred_language custom field is not mapped: not emitted, counted.
    CHECK_FALSE(r.has("preferred_language"));
    CHECK(p.h.counter("custom_fields_ignored") >= 1);
    CHECK(nothing_personal_logged(p.h, {"Siobh", "447700900461", "Dia duit", "council tax"}));
}

TEST_CASE("PII transcript: card data and NINO are redacted before anything is stored; the "
          "agent is staff data") {
    Plugin p;
    auto lines = fixture_lines("platform_pii_card_and_nino_transcript.jsonl");
    REQUIRE(lines.size() == 5);
    for (std::size_t k = 0; k < lines.size(); ++k) {
        CHECK(p.post(lines[k], auth("pii-" + std::to_string(k))).status == 200);
        std::string at_rest = p.state_bytes();
        CHECK(at_rest.find("4111") == std::string::npos);
        CHECK(at_rest.find("QQ 12 34 56 C") == std::string::npos);
        CHECK(at_rest.find("cvv 123") == std::string::npos);
        CHECK(at_rest.find("09/29") == std::string::npos);
    }
    CHECK(p.h.quarantined().empty());
    p.h.advance(31 * kMinute);
    const auto& r = p.only_record();
    CHECK(r.value("citizen.name") == "Gareth Pryce-Oduya");
    CHECK(r.value("content.turns[0].author") == "bot");
    CHECK(r.value("content.turns[2].text") ==
          "my NI number is [NINO] and claim ref HB/0000-7731 if that helps");
    CHECK(r.value("content.turns[3].text") ==
          "also can i pay the £42.10 arrears now? card is [CARD] exp [EXPIRY] cvv [CVV]");
    CHECK(r.value("content.turns[4].author") == "agent");
    CHECK(r.value("agent.id") == "801234");
    CHECK(r.category("agent.id") == "staff.id");
    CHECK(r.value("agent.name") == "Priya (Contact Centre)");
    CHECK(r.category("agent.name") == "staff.name");
    CHECK_FALSE(r.has("identifiers.nino"));
    CHECK(r.json().find("4111") == std::string::npos);
    CHECK(r.json().find("QQ 12") == std::string::npos);
    CHECK(p.h.counter("cards_redacted") == 1);
    CHECK(p.h.counter("ninos_redacted") == 1);
    CHECK(nothing_personal_logged(p.h, {"4111", "QQ 12", "Gareth", "HB/0000", "Priya"}));
}

TEST_CASE("nino = identifier: the NINO typed by the citizen is also kept as identifiers.nino") {
    Plugin p(Config{{"nino", "\"identifier\""}});
    for (auto& l : fixture_lines("platform_pii_card_and_nino_transcript.jsonl"))
        CHECK(p.post(l, auth()).status == 200);
    p.h.advance(31 * kMinute);
    const auto& r = p.only_record();
    CHECK(r.value("identifiers.nino") == "QQ123456C");
    CHECK(r.category("identifiers.nino") == "identifier.nino");
    CHECK(r.value("content.turns[2].text").find("[NINO]") != std::string::npos);
}

TEST_CASE("sys event: Landbot archiving the chat closes the conversation (after a short grace)") {
    Plugin p;
    for (auto& l : fixture_lines("platform_pii_card_and_nino_transcript.jsonl"))
        CHECK(p.post(l, auth()).status == 200);
    CHECK(p.post(fixture("platform_sys_event_missing_optionals.json"), auth()).status == 200);
    p.h.advance(1000);
    CHECK(p.h.emitted().empty());
    p.h.advance(2000);
    const auto& r = p.only_record();
    CHECK(r.value("content.closed_by") == "archived");
    CHECK(r.value("content.turns[5].author") == "system");
    CHECK(r.value("content.turns[5].text") == "Conversation archived");
    // The sys event carries no name: the earlier one stays.
    CHECK(r.value("citizen.name") == "Gareth Pryce-Oduya");
}

TEST_CASE("sys event alone, with its optionals missing, is still a (system-only) record") {
    Plugin p(Config{{"close_on_archive", "false"}});
    CHECK(p.post(fixture("platform_sys_event_missing_optionals.json"), auth()).status == 200);
    p.h.advance(31 * kMinute);
    const auto& r = p.only_record();
    CHECK(r.value("content.turns[0].author") == "system");
    CHECK_FALSE(r.has("citizen.name"));
    CHECK_FALSE(r.has("hints.channel"));
    CHECK(r.meta("channel") == "web_chat");
    // No _raw.uuid: a stable id made from the (redacted) content.
    CHECK(r.meta("external_id")->rfind("landbot:500100512:h:", 0) == 0);
}

TEST_CASE("batched delivery: both messages kept, ordered by timestamp; the unknown type is an "
          "opaque turn; the oddities are recorded as defects") {
    Plugin p;
    auto reply = p.post(fixture("platform_batched_two_messages_unexpected.json"), auth());
    CHECK(reply.status == 200);
    CHECK(reply.body == "{\"status\":\"accepted\",\"messages\":2,\"duplicates\":0}");
    p.h.advance(31 * kMinute);
    const auto& r = p.only_record();
    // The location message is earlier (…499.9 < …500.2).
    CHECK(r.value("content.turns[0].type") == "location");
    CHECK_FALSE(r.has("content.turns[0].text"));
    CHECK(r.value("content.turns[0].author") == "citizen");
    CHECK(r.value("content.turns[1].text") == "first of two");
    CHECK(r.meta("channel") == "whatsapp"); // the legacy "whatsapi" of the first turn
    std::string defects;
    for (const auto& f : r.fields())
        if (f.path.rfind("defects[", 0) == 0) {
            CHECK(f.category == "operational.defect");
            defects += f.str + "|";
        }
    CHECK(defects.find("batched delivery") != std::string::npos);
    CHECK(defects.find("legacy or sandbox channel.type") != std::string::npos);
    CHECK(defects.find("more than one channel type") != std::string::npos);
    CHECK(p.h.counter("turns_opaque") == 1);
    CHECK(p.h.counter("deliveries_batched") == 1);
    // Coordinates are not kept.
    CHECK(r.json().find("53.4") == std::string::npos);
}

TEST_CASE("malformed JSON: 200 (a 4xx would be retried six times) and quarantined, never "
          "logged") {
    Plugin p;
    auto reply = p.post(fixture("platform_malformed_truncated.json"), auth("bad-1"));
    CHECK(reply.status == 200);
    CHECK(reply.body.find("quarantined") != std::string::npos);
    REQUIRE(p.h.quarantined().size() == 1);
    CHECK(p.h.quarantined()[0].reason.rfind("malformed: not JSON: ", 0) == 0);
    CHECK(p.h.quarantined()[0].ref == "sentry-trace bad-1");
    CHECK(p.h.quarantined()[0].bytes == fixture("platform_malformed_truncated.json"));
    CHECK(p.h.state().empty());
    CHECK(p.h.emitted().empty());
    CHECK(nothing_personal_logged(p.h, {"Notreal", "27 ", "L1 0A"}));
    // A retry of the same delivery is recognised and not quarantined again.
    CHECK(p.post(fixture("platform_malformed_truncated.json"), auth("bad-1")).status == 200);
    CHECK(p.h.quarantined().size() == 1);
    // Valid JSON of neither shape, and a message without a customer id.
    CHECK(p.post("{\"hello\":1}", auth()).status == 200);
    CHECK(p.post("{\"messages\":[{\"type\":\"text\",\"data\":{\"body\":\"x\"}}]}", auth()).status == 200);
    REQUIRE(p.h.quarantined().size() == 3);
    CHECK(p.h.quarantined()[1].reason == "malformed: no messages");
    CHECK(p.h.quarantined()[2].reason == "messages[0]: no usable customer.id");
}

TEST_CASE("oversized body: 200 and a bounded, redacted prefix quarantined; nothing stored") {
    Plugin p;
    std::string body = fixture("platform_oversized_body.json");
    REQUIRE(body.size() > 64 * 1024);
    auto reply = p.post(body, auth("big-1"));
    CHECK(reply.status == 200);
    REQUIRE(p.h.quarantined().size() == 1);
    const auto& q = p.h.quarantined()[0];
    CHECK(q.bytes.size() <= 16 * 1024);
    CHECK(body.rfind(q.bytes, 0) == 0);
    CHECK(q.reason == "body of " + std::to_string(body.size()) +
                          " bytes is over max_message (65536 bytes); first " +
                          std::to_string(q.bytes.size()) + " bytes kept");
    CHECK(p.h.state().empty());
    CHECK(nothing_personal_logged(p.h, {"Nowhere", "damp", "L8 0ZZ"}));
    // With a larger max_message the same body is an ordinary message.
    Plugin big(Config{{"max_message", "\"1MiB\""}});
    CHECK(big.post(body, auth()).status == 200);
    CHECK(big.h.quarantined().empty());
    big.h.advance(31 * kMinute);
    CHECK(big.only_record().value("content.turns[0].text").size() > 150'000);
}

TEST_CASE("APIchat envelope: refused 401 unless allow_apichat; then a bot turn") {
    std::string body = fixture("apichat_bot_message.json");
    {
        Plugin p;
        CHECK(p.post(body, {}).status == 401);
        CHECK(p.h.state().empty());
    }
    Plugin p(Config{{"allow_apichat", "true"}});
    CHECK(p.post(body, {}).status == 200);
    // Without a token only the APIchat shape gets in.
    CHECK(p.post(fixture("platform_web_text_customer.json"), {}).status == 401);
    CHECK(p.post(fixture("platform_malformed_truncated.json"), {}).status == 401);
    CHECK(p.h.quarantined().empty());
    // The customer's APIchat token is a credential: never stored.
    CHECK(p.state_bytes().find("fake-customer-token") == std::string::npos);
    p.h.advance(31 * kMinute);
    const auto& r = p.only_record();
    CHECK(r.meta("channel") == "web_chat");
    CHECK(r.meta("subject_ref") == "500100900");
    CHECK(r.value("content.turns[0].author") == "bot");
    CHECK(r.value("content.turns[0].text") ==
          "Are you a council tenant or a housing association tenant?");
    CHECK(r.value("hints.topic") == "housing");
    CHECK(r.value("hints.channel") == "Switchboard relay (APIchat)");
    CHECK_FALSE(r.has("citizen.name"));
    CHECK_FALSE(r.has("contact.email"));
    CHECK(r.json().find("fake-customer-token") == std::string::npos);
}

// --- dedupe, durability, bounds ------------------------------------------------

TEST_CASE("redeliveries are recognised by sentry-trace and by _raw.uuid, also after the "
          "conversation closed") {
    Plugin p;
    std::string body = fixture("platform_web_text_customer.json");
    auto headers = fixture_headers("platform_web_text_customer.headers.txt");
    CHECK(p.post(body, headers).status == 200);
    auto again = p.post(body, headers);
    CHECK(again.status == 200);
    CHECK(again.body == "{\"status\":\"duplicate\"}");
    // A new sentry-trace but the same message uuid.
    auto other = p.post(body, auth("another-trace"));
    CHECK(other.status == 200);
    CHECK(other.body == "{\"status\":\"accepted\",\"messages\":0,\"duplicates\":1}");
    p.h.advance(31 * kMinute);
    CHECK(p.h.emitted().size() == 1);
    CHECK_FALSE(p.only_record().has("content.turns[1].text"));
    // After the close, within the dedupe window, and after a restart.
    p.h.destroy();
    REQUIRE(p.h.create() == SB_OK);
    REQUIRE(p.h.start() == SB_OK);
    CHECK(p.post(body, auth("yet-another")).body ==
          "{\"status\":\"accepted\",\"messages\":0,\"duplicates\":1}");
    p.h.advance(31 * kMinute);
    CHECK(p.h.emitted().size() == 1);
    // Beyond the window the message is new again (Landbot retries for
    // minutes, not hours).
    p.h.advance(60 * kMinute);
    CHECK(p.post(body, auth("much-later")).body ==
          "{\"status\":\"accepted\",\"messages\":1,\"duplicates\":0}");
}

TEST_CASE("an acknowledged message survives a restart (the open conversation is restored)") {
    Plugin p;
    auto lines = fixture_lines("platform_pii_card_and_nino_transcript.jsonl");
    for (int k = 0; k < 3; ++k) CHECK(p.post(lines[k], auth("t" + std::to_string(k))).status == 200);
    // The daemon dies: only what is in durable state is left.
    p.h.destroy();
    REQUIRE(p.h.create() == SB_OK);
    REQUIRE(p.h.start() == SB_OK);
    CHECK(p.h.logged("1 open conversation(s) restored"));
    // Landbot retries a message whose 2xx was lost: not taken twice.
    CHECK(p.post(lines[2], auth("t2")).body == "{\"status\":\"accepted\",\"messages\":0,\"duplicates\":1}");
    CHECK(p.post(lines[3], auth("t3")).status == 200);
    CHECK(p.post(lines[4], auth("t4")).status == 200);
    p.h.advance(31 * kMinute);
    const auto& r = p.only_record();
    CHECK(r.value("content.turns[0].author") == "bot");
    CHECK(r.value("content.turns[4].author") == "agent");
    CHECK_FALSE(r.has("content.turns[5].author"));
}

TEST_CASE("a message that could not be stored is answered 503 (Landbot retries), not 200") {
    Plugin p(Config{{"max_turns", "1"}}); // every message closes at once: emit_batch
    std::string body = fixture("platform_web_text_customer.json");
    p.h.journal_available(false);
    auto reply = p.post(body, auth("t-503"));
    CHECK(reply.status == 503);
    CHECK(p.h.emitted().empty());
    CHECK(p.h.state().count("conv:500100201") == 0);
    CHECK(p.h.counter("deliveries_unavailable") == 1);
    // Landbot's retry, once the journal is back.
    p.h.journal_available(true);
    CHECK(p.post(body, auth("t-503")).status == 200);
    CHECK(p.h.emitted().size() == 1);
    CHECK(p.post(body, auth("t-503")).body == "{\"status\":\"duplicate\"}");
    CHECK(p.h.emitted().size() == 1);
}

TEST_CASE("a conversation the journal cannot take stays open and is emitted once it can") {
    Plugin p;
    CHECK(p.post(fixture("platform_web_text_customer.json"), auth()).status == 200);
    p.h.journal_available(false);
    p.h.advance(31 * kMinute);
    CHECK(p.h.emitted().empty());
    CHECK(p.h.counter("emit_unavailable") >= 1);
    CHECK(p.h.state().count("conv:500100201") == 1);
    CHECK(p.state_bytes().find("recycling") != std::string::npos);
    p.h.journal_available(true);
    p.h.advance(2000);
    CHECK(p.h.emitted().size() == 1);
    p.h.advance(10 * kMinute);
    CHECK(p.h.emitted().size() == 1);
}

TEST_CASE("max_turns and max_conversation close a conversation early, in the same commit as "
          "the message") {
    Plugin p(Config{{"max_turns", "2"}});
    auto lines = fixture_lines("platform_pii_card_and_nino_transcript.jsonl");
    for (auto& l : lines) CHECK(p.post(l, auth()).status == 200);
    // 5 messages, 2 per conversation: two closed at once, one still open.
    REQUIRE(p.h.emitted().size() == 2);
    CHECK(p.h.emitted()[0].value("content.closed_by") == "max_turns");
    CHECK(p.h.emitted()[0].meta("external_id") ==
          "landbot:500100512:5c0e0000-0000-4000-8000-000000000101");
    CHECK(p.h.emitted()[1].meta("external_id") ==
          "landbot:500100512:5c0e0000-0000-4000-8000-000000000103");
    p.h.advance(31 * kMinute);
    REQUIRE(p.h.emitted().size() == 3);
    CHECK(p.h.emitted()[2].value("content.closed_by") == "quiet");

    // A message bigger than max_conversation closes its conversation at once.
    Plugin small(Config{{"max_conversation", "\"64KiB\""}, {"max_message", "\"1MiB\""}});
    CHECK(small.post(lines[0], auth()).status == 200);
    CHECK(small.post(fixture("platform_oversized_body.json"), auth()).status == 200);
    REQUIRE(small.h.emitted().size() == 1);
    CHECK(small.h.emitted()[0].value("content.closed_by") == "max_conversation");
    CHECK(small.h.emitted()[0].meta("subject_ref") == "500100999");
    CHECK(small.h.emitted()[0].value("content.turns[0].author") == "citizen");
    // What stays in state is small: the dedupe keys.
    for (const auto& [k, v] : small.h.state()) CHECK(v.size() < 4096);
}

TEST_CASE("max_duration closes a conversation that never goes quiet") {
    Plugin p(Config{{"max_duration", "\"1h\""}, {"quiet_period", "\"30m\""}});
    std::string body = fixture("platform_web_text_customer.json");
    for (int k = 0; k < 4; ++k) {
        // The same message with new uuids, every 20 minutes.
        std::string b = body;
        auto at = b.find("7c1e0001");
        b.replace(at, 8, "7c1e100" + std::to_string(k));
        CHECK(p.post(b, auth()).status == 200);
        p.h.advance(20 * kMinute);
    }
    REQUIRE(p.h.emitted().size() == 1);
    CHECK(p.h.emitted()[0].value("content.closed_by") == "max_duration");
}

// --- erase ----------------------------------------------------------------------

namespace {

struct ErasePlugin {
    landbot_test::FakeLandbotApi api;
    std::unique_ptr<Plugin> p;
    explicit ErasePlugin(bool with_token = true) {
        std::vector<std::pair<std::string, std::string>> cfg = {
            {"api_base", "\"" + api.base() + "\""}, {"api_timeout", "\"2s\""},
            {"api_max_wait", "\"2s\""}};
        if (with_token) cfg.push_back({"api_token", "\"env:LANDBOT_TEST_AGENT_TOKEN\""});
        p = std::make_unique<Plugin>(cfg);
        CHECK(p->post(fixture("platform_web_text_customer.json"), auth()).status == 200);
        p->h.advance(31 * kMinute);
        REQUIRE(p->h.emitted().size() == 1);
    }
    sb_status erase() { return p->h.erase(p->h.emitted().front()); }
};

} // namespace

TEST_CASE("erase: DELETE the customer (204), then GET confirms 404") {
    ErasePlugin e;
    e.api.fallback("DELETE", {204, "", ""});
    CHECK(e.erase() == SB_OK);
    auto seen = e.api.seen();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].method == "DELETE");
    CHECK(seen[0].uri == "/v1/customers/500100201/");
    CHECK(seen[0].authorization == "Token agent-token-NOT-REAL");
    CHECK(seen[1].method == "GET");
    CHECK(seen[1].uri == "/v1/customers/500100201/");
    CHECK(e.p->h.counter("erase_confirmed") == 1);
    CHECK_FALSE(e.p->h.logged("500100201"));
    CHECK_FALSE(e.p->h.logged("agent-token-NOT-REAL"));
}

TEST_CASE("erase: 429 is retried after Retry-After, then 204 and 404") {
    ErasePlugin e;
    e.api.script("DELETE", {{429, "1", ""}, {204, "", ""}});
    auto t0 = std::chrono::steady_clock::now();
    CHECK(e.erase() == SB_OK);
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(900));
    CHECK(e.api.count("DELETE") == 2);
    CHECK(e.api.count("GET") == 1);
    CHECK(e.p->h.counter("api_retries") == 1);
}

TEST_CASE("erase: a Retry-After beyond api_max_wait hands the task back to the core at once") {
    ErasePlugin e;
    e.api.script("DELETE", {{429, "3600", ""}});
    auto t0 = std::chrono::steady_clock::now();
    CHECK(e.erase() == SB_ERR_TRANSIENT);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    CHECK(e.p->h.last_error().find("rate limited (429, Retry-After 3600s)") != std::string::npos);
    CHECK(e.api.count("DELETE") == 1);
}

TEST_CASE("erase: 5xx is retried up to api_attempts, then SB_ERR_TRANSIENT for the core") {
    ErasePlugin e;
    e.api.script("DELETE", {{502, "", ""}, {503, "", ""}, {500, "", ""}});
    CHECK(e.erase() == SB_ERR_TRANSIENT);
    CHECK(e.api.count("DELETE") == 3);
    CHECK(e.p->h.last_error().find("server error 500; retried later") != std::string::npos);
    // The core retries later; this time it works.
    e.api.fallback("DELETE", {204, "", ""});
    CHECK(e.erase() == SB_OK);
}

TEST_CASE("erase: 404 on DELETE means already gone") {
    ErasePlugin e;
    e.api.fallback("DELETE", {404, "", "{\"errors\":{\"detail\":[\"Not found.\"]}}"});
    CHECK(e.erase() == SB_OK);
    CHECK(e.api.count("GET") == 0);
    CHECK(e.p->h.counter("erase_already_gone") == 1);
}

TEST_CASE("erase: 401 and other 4xx are permanent, with a reason") {
    ErasePlugin e;
    e.api.fallback("DELETE", {401, "", "{\"errors\":{\"detail\":[\"Invalid token.\"]}}"});
    CHECK(e.erase() == SB_ERR_PERMANENT);
    CHECK(e.p->h.last_error().find("Landbot answered DELETE with 401 (is api_token a valid agent "
                                   "token?)") != std::string::npos);
    e.api.fallback("DELETE", {400, "", "{}"});
    CHECK(e.erase() == SB_ERR_PERMANENT);
}

TEST_CASE("erase: a customer still there after DELETE is not confirmed") {
    ErasePlugin e;
    e.api.fallback("DELETE", {204, "", ""});
    e.api.fallback("GET", {200, "", "{\"customer\":{\"id\":500100201}}"});
    CHECK(e.erase() == SB_ERR_TRANSIENT);
    CHECK(e.p->h.last_error().find("still there") != std::string::npos);
}

TEST_CASE("erase: without api_token, or with Landbot unreachable, the task waits") {
    {
        ErasePlugin e(false);
        CHECK(e.erase() == SB_ERR_TRANSIENT);
        CHECK(e.p->h.last_error().find("api_token is not configured") != std::string::npos);
        CHECK(e.api.seen().empty());
        CHECK(e.p->h.logged("api_token is not set"));
    }
    // Nothing listens on the port any more.
    int port = 0;
    {
        landbot_test::FakeLandbotApi gone;
        port = gone.port();
    }
    Env env;
    Plugin p(Config{{"api_base", "\"http://127.0.0.1:" + std::to_string(port) + "/v1\""},
              {"api_token", "\"env:LANDBOT_TEST_AGENT_TOKEN\""},
              {"api_attempts", "2"},
              {"api_max_wait", "\"100ms\""}});
    CHECK(p.post(fixture("platform_web_text_customer.json"), auth()).status == 200);
    p.h.advance(31 * kMinute);
    REQUIRE(p.h.emitted().size() == 1);
    CHECK(p.h.erase(p.h.emitted().front()) == SB_ERR_TRANSIENT);
    CHECK(p.h.last_error().find("no answer") != std::string::npos);
}

TEST_CASE("erase: a record without a Landbot customer id is refused permanently") {
    ErasePlugin e;
    CHECK(e.p->h.erase("R-unknown", "not-landbot") == SB_ERR_PERMANENT);
    CHECK(e.api.seen().empty());
    // From the external id alone (the core always passes subject_ref too).
    e.api.fallback("DELETE", {204, "", ""});
    CHECK(e.p->h.erase("R-unknown", "landbot:500100201:abc") == SB_OK);
    CHECK(e.api.seen().at(0).uri == "/v1/customers/500100201/");
    CHECK(e.p->h.erase("R-unknown", "landbot:../../x:abc") == SB_ERR_PERMANENT);
}

TEST_CASE("erase: a data subject's erasure request also drops their open conversation") {
    ErasePlugin e;
    e.api.fallback("DELETE", {204, "", ""});
    // The same customer writes again: a new conversation opens.
    std::string body = fixture("platform_web_text_customer.json");
    body.replace(body.find("7c1e0001"), 8, "7c1e0099");
    CHECK(e.p->post(body, auth()).status == 200);
    CHECK(e.p->state_bytes().find("recycling") != std::string::npos);
    // At retention expiry the newer, open conversation is kept...
    CHECK(e.p->h.erase(e.p->h.emitted().front(), SB_ERASE_RETENTION) == SB_OK);
    CHECK(e.p->state_bytes().find("recycling") != std::string::npos);
    // ... on a subject's request it goes too, and is never emitted.
    CHECK(e.p->h.erase(e.p->h.emitted().front(), SB_ERASE_REQUEST) == SB_OK);
    CHECK(e.p->state_bytes().find("recycling") == std::string::npos);
    CHECK(e.p->h.counter("conversations_dropped") == 1);
    e.p->h.advance(31 * kMinute);
    CHECK(e.p->h.emitted().size() == 1);
    // Landbot's retry of the dropped message is not taken again.
    CHECK(e.p->post(body, auth()).body == "{\"status\":\"accepted\",\"messages\":0,\"duplicates\":1}");
}
