// landbot end to end: the real daemon as a subprocess, the fixtures POSTed
// over real HTTP on 127.0.0.1, records read from a memory-sink's output
// file, quarantines from the audit trail, the data directory scanned for
// card numbers after SIGTERM, a kill -9 between acknowledged messages, and
// the erase hook at expiry against a local server playing the Landbot API.
#include "fake_landbot_api.hpp"
#include "process.hpp"

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>

#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using sbtest::Process;
using sbtest::TempDir;

namespace {

const char* const kToken = "fixture-landbot-hook-token-NOT-REAL";
using Headers = std::vector<std::pair<std::string, std::string>>;


std::string fixture(const std::string& name) {
    return sbtest::read_file(std::filesystem::path(sbtest::env_or_fail("SB_FIXTURES")) / "landbot" / name);
}

std::vector<std::string> fixture_lines(const std::string& name) {
    std::istringstream in(fixture(name));
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);)
        if (!l.empty()) out.push_back(l);
    return out;
}

Headers fixture_headers(const std::string& name) {
    std::istringstream in(fixture(name));
    Headers out;
    std::string l;
    std::getline(in, l); // the request line
    while (std::getline(in, l)) {
        if (!l.empty() && l.back() == '\r') l.pop_back(); // the files have CRLF ends
        auto colon = l.find(':');
        if (colon == std::string::npos) continue;
        std::string v = l.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.erase(0, 1);
        out.emplace_back(l.substr(0, colon), v);
    }
    return out;
}

Headers auth(const std::string& trace = {}) {
    Headers h{{"Authorization", std::string("Token ") + kToken}};
    if (!trace.empty()) h.emplace_back("sentry-trace", trace);
    return h;
}

struct Reply {
    int status = 0;
    std::string body;
};

// A field of a parsed JSON value by dotted path with indexes ("a.b[2].c").
Poco::Dynamic::Var at(Poco::Dynamic::Var v, const std::string& path) {
    std::size_t i = 0;
    while (i < path.size() && !v.isEmpty()) {
        if (path[i] == '.') ++i;
        if (path[i] == '[') {
            std::size_t close = path.find(']', i);
            std::size_t index = std::stoul(path.substr(i + 1, close - i - 1));
            i = close + 1;
            if (v.type() != typeid(Poco::JSON::Array::Ptr)) return {};
            auto arr = v.extract<Poco::JSON::Array::Ptr>();
            if (index >= arr->size()) return {};
            v = arr->get(static_cast<unsigned>(index));
            continue;
        }
        std::size_t end = path.find_first_of(".[", i);
        std::string key = path.substr(i, end == std::string::npos ? std::string::npos : end - i);
        i = end == std::string::npos ? path.size() : end;
        if (v.type() != typeid(Poco::JSON::Object::Ptr)) return {};
        auto obj = v.extract<Poco::JSON::Object::Ptr>();
        if (!obj->has(key)) return {};
        v = obj->get(key);
    }
    return v;
}

std::string text(const Poco::Dynamic::Var& root, const std::string& path) {
    auto v = at(root, path);
    return v.isEmpty() ? std::string("<missing>") : v.toString();
}

// The daemon with one landbot instance ("chat") and a memory-sink taking
// every record unchanged.
class Daemon {
public:
    explicit Daemon(const std::string& source_config, const std::string& extra_toml = {},
                    std::vector<std::string> env = {}) {
        config_ = dir_.write("landbot.toml", R"(
[node]
data_dir = "data"
[log]
level = "debug"
[sources.chat]
plugin = "landbot"
retention = "3650d"
[sources.chat.config]
token = "env:LANDBOT_HOOK_TOKEN"
)" + source_config + R"(
[destinations.sink]
plugin = "memory-sink"
[destinations.sink.config]
output = "out.jsonl"
[[route]]
category = ["*", "unclassified"]
destination = "sink"
purpose = "test"
profile = "all"
lawful_basis = "test"
[profiles.all.fields]
"*" = "keep"
)" + extra_toml);
        env.push_back(std::string("LANDBOT_HOOK_TOKEN=") + kToken);
        env_ = env;
        start();
    }
    ~Daemon() {
        if (proc_) proc_->signal(SIGKILL);
    }

    void start() {
        proc_ = std::make_unique<Process>(
            std::vector<std::string>{sbtest::switchboard_binary(), "run", "-c", config_.string(),
                                     "--plugin-dir", sbtest::plugin_dir(), "--set",
                                     "http.listen=127.0.0.1:0"},
            env_);
        port_ = sbtest::ready_port(*proc_, "http", 30s);
    }
    void kill9() {
        proc_->signal(SIGKILL);
        REQUIRE(proc_->wait(10s));
        log_ += proc_->err();
    }
    void stop() {
        proc_->signal(SIGTERM);
        auto code = proc_->wait(30s);
        REQUIRE(code);
        CHECK(*code == 0);
        log_ += proc_->err();
        proc_.reset();
    }

    Reply post(const std::string& body, const Headers& headers,
               const std::string& path = "/hooks/landbot/chat") {
        Poco::Net::HTTPClientSession s("127.0.0.1", static_cast<Poco::UInt16>(port_));
        s.setTimeout(Poco::Timespan(10, 0));
        Poco::Net::HTTPRequest req(Poco::Net::HTTPRequest::HTTP_POST, path,
                                   Poco::Net::HTTPMessage::HTTP_1_1);
        req.setContentType("application/json");
        req.set("User-Agent", "landbot/webhooks");
        for (const auto& [k, v] : headers) req.set(k, v);
        req.setContentLength(static_cast<std::streamsize>(body.size()));
        s.sendRequest(req) << body;
        Poco::Net::HTTPResponse resp;
        std::istream& in = s.receiveResponse(resp);
        std::ostringstream b;
        b << in.rdbuf();
        return {static_cast<int>(resp.getStatus()), b.str()};
    }

    // The records the sink has received (waits until there are `n`).
    std::vector<Poco::Dynamic::Var> records(std::size_t n, std::chrono::seconds timeout = 30s) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        std::vector<Poco::Dynamic::Var> out;
        for (;;) {
            out.clear();
            std::istringstream in(sbtest::read_file(dir_.path / "out.jsonl"));
            for (std::string l; std::getline(in, l);)
                if (!l.empty()) out.push_back(at(Poco::JSON::Parser().parse(l), "record"));
            if (out.size() >= n || std::chrono::steady_clock::now() >= deadline) return out;
            if (proc_) proc_->pump(50); // keep its log pipe drained
            else std::this_thread::sleep_for(50ms);
        }
    }
    // Lets the daemon run for `d` (its log drained meanwhile).
    void idle(std::chrono::milliseconds d) {
        auto until = std::chrono::steady_clock::now() + d;
        while (std::chrono::steady_clock::now() < until) proc_->pump(20);
    }
    bool wait_log(const std::string& pattern, std::chrono::seconds t = 20s) {
        return proc_->wait_for_log(pattern, t).has_value();
    }

    // Everything under the data directory, raw bytes.
    std::string data_bytes() const {
        std::string raw;
        for (auto& e : std::filesystem::recursive_directory_iterator(dir_.path / "data"))
            if (e.is_regular_file()) raw += sbtest::read_file(e.path());
        return raw;
    }
    std::string audit() const {
        std::string raw;
        auto d = dir_.path / "data" / "audit";
        if (std::filesystem::exists(d))
            for (auto& e : std::filesystem::directory_iterator(d)) raw += sbtest::read_file(e.path());
        return raw;
    }
    std::string log() const { return log_ + (proc_ ? proc_->err() : std::string()); }
    std::string output() const { return sbtest::read_file(dir_.path / "out.jsonl"); }

private:
    TempDir dir_{"sb-landbot"};
    std::filesystem::path config_;
    std::vector<std::string> env_;
    std::unique_ptr<Process> proc_;
    int port_ = 0;
    std::string log_;
};

void check_log_clean(const std::string& log, std::initializer_list<const char*> values) {
    for (const char* v : values) {
        INFO("value in the daemon's log: " << v);
        CHECK(log.find(v) == std::string::npos);
    }
}

const char* const kFast = "quiet_period = \"2s\"\n";

} // namespace

TEST_CASE("daemon: web text fixture becomes one conversation record; its redelivery is "
          "acknowledged once") {
    Daemon d(kFast);
    auto headers = fixture_headers("platform_web_text_customer.headers.txt");
    auto body = fixture("platform_web_text_customer.json");
    auto r1 = d.post(body, headers);
    CHECK(r1.status == 200);
    CHECK(r1.body == "{\"status\":\"accepted\",\"messages\":1,\"duplicates\":0}");
    auto r2 = d.post(body, headers);
    CHECK(r2.status == 200);
    CHECK(r2.body == "{\"status\":\"duplicate\"}");
    auto recs = d.records(1);
    REQUIRE(recs.size() == 1);
    const auto& r = recs[0];
    CHECK(text(r, "meta.channel") == "web_chat");
    CHECK(text(r, "meta.occurred_at") == "2025-01-06T09:01:01.482Z");
    // Vendor ids never leave the core.
    CHECK(at(r, "meta.external_id").isEmpty());
    CHECK(at(r, "meta.subject_ref").isEmpty());
    CHECK(text(r, "fields.hints.topic") == "bins-and-recycling");
    CHECK(text(r, "fields.citizen.address.postcode") == "L8 0ZZ");
    CHECK(at(r, "fields.citizen.name").isEmpty());
    CHECK(text(r, "fields.content.turns[0].author") == "citizen");
    CHECK(text(r, "fields.content.turns[0].text") ==
          "Hi, my blue recycling bin wasn't emptied on Tuesday. Can someone come back for it?");
    CHECK(text(r, "fields.vendor.customer_id") == "500100201");
    d.idle(3s);
    CHECK(d.records(1, 1s).size() == 1);
    d.stop();
    check_log_clean(d.log(), {"recycling", "L8 0ZZ", "Visitor #", "bins-and", kToken});
}

TEST_CASE("daemon: WhatsApp customer message and bot reply (out of order) become one record") {
    Daemon d(std::string(kFast) + "hint_fields = [\"enquiry_topic\", \"topics_selected\"]\n");
    CHECK(d.post(fixture("platform_bot_reply_whatsapp.json"), auth("bot-1")).status == 200);
    CHECK(d.post(fixture("platform_whatsapp_customer_unicode.json"),
                 fixture_headers("platform_whatsapp_customer_unicode.headers.txt"))
              .status == 200);
    auto recs = d.records(1);
    REQUIRE(recs.size() == 1);
    const auto& r = recs[0];
    CHECK(text(r, "meta.channel") == "whatsapp");
    CHECK(text(r, "fields.citizen.name") == "Siobhán Ní Bhriain 🌻");
    CHECK(text(r, "fields.contact.phone") == "447700900461");
    CHECK(text(r, "fields.hints.topic") == "council tax");
    CHECK(text(r, "fields.hints.topics[1]") == "moving home");
    CHECK(text(r, "fields.content.turns[0].author") == "citizen");
    CHECK(text(r, "fields.content.turns[1].author") == "bot");
    CHECK(text(r, "fields.content.turns[1].text").find("Please don't send bank or card details") !=
          std::string::npos);
    d.stop();
    check_log_clean(d.log(), {"Siobh", "447700900461", "Dia duit", "council tax"});
}

TEST_CASE("daemon: the PII transcript is redacted before anything is stored: no card number or "
          "NINO in the data directory, the output or the log") {
    Daemon d(kFast);
    auto lines = fixture_lines("platform_pii_card_and_nino_transcript.jsonl");
    REQUIRE(lines.size() == 5);
    for (std::size_t k = 0; k < lines.size(); ++k)
        CHECK(d.post(lines[k], auth("pii-" + std::to_string(k))).status == 200);
    auto recs = d.records(1);
    REQUIRE(recs.size() == 1);
    const auto& r = recs[0];
    CHECK(text(r, "fields.citizen.name") == "Gareth Pryce-Oduya");
    CHECK(text(r, "fields.content.turns[2].text") ==
          "my NI number is [NINO] and claim ref HB/0000-7731 if that helps");
    CHECK(text(r, "fields.content.turns[3].text") ==
          "also can i pay the £42.10 arrears now? card is [CARD] exp [EXPIRY] cvv [CVV]");
    CHECK(text(r, "fields.agent.id") == "801234");
    CHECK(text(r, "fields.agent.name") == "Priya (Contact Centre)");
    d.stop();
    std::string raw = d.data_bytes();
    REQUIRE(raw.size() > 0);
    for (const char* secret : {"4111 1111 1111 1111", "4111111111111111", "QQ 12 34 56 C",
                               "QQ123456C", "cvv 123"}) {
        INFO(secret);
        CHECK(raw.find(secret) == std::string::npos);
        CHECK(d.output().find(secret) == std::string::npos);
    }
    // (The card as the fixtures spell it: a bare "4111" can be part of the
    // HTTP port the log names.)
    check_log_clean(d.log(), {"4111 1111", "41111111", "QQ 12", "Gareth", "HB/0000", "Priya", "arrears"});
}

TEST_CASE("daemon: Landbot's sys 'archived' event (optionals missing) closes the conversation") {
    // A long quiet period: only the archive can close it within the test.
    Daemon d("quiet_period = \"10m\"\n");
    auto lines = fixture_lines("platform_pii_card_and_nino_transcript.jsonl");
    for (auto& l : lines) CHECK(d.post(l, auth()).status == 200);
    CHECK(d.post(fixture("platform_sys_event_missing_optionals.json"), auth()).status == 200);
    auto recs = d.records(1);
    REQUIRE(recs.size() == 1);
    CHECK(text(recs[0], "fields.content.closed_by") == "archived");
    CHECK(text(recs[0], "fields.content.turns[5].author") == "system");
    CHECK(text(recs[0], "fields.content.turns[5].text") == "Conversation archived");
    d.stop();
}

TEST_CASE("daemon: the batched delivery keeps both messages, the unknown type as an opaque turn") {
    Daemon d(kFast);
    auto reply = d.post(fixture("platform_batched_two_messages_unexpected.json"), auth("batch-1"));
    CHECK(reply.status == 200);
    CHECK(reply.body == "{\"status\":\"accepted\",\"messages\":2,\"duplicates\":0}");
    auto recs = d.records(1);
    REQUIRE(recs.size() == 1);
    const auto& r = recs[0];
    CHECK(text(r, "fields.content.turns[0].type") == "location");
    CHECK(at(r, "fields.content.turns[0].text").isEmpty());
    CHECK(text(r, "fields.content.turns[1].text") == "first of two");
    std::string defects;
    for (int k = 0; k < 3; ++k) defects += text(r, "fields.defects[" + std::to_string(k) + "]") + "|";
    CHECK(defects.find("batched delivery") != std::string::npos);
    CHECK(defects.find("legacy or sandbox channel.type") != std::string::npos);
    CHECK(defects.find("more than one channel type") != std::string::npos);
    d.stop();
}

TEST_CASE("daemon: malformed and oversized bodies are answered 200 and quarantined (audited), "
          "never logged; a wrong token is 401") {
    Daemon d(kFast);
    auto bad = d.post(fixture("platform_malformed_truncated.json"), auth("malformed-1"));
    CHECK(bad.status == 200);
    CHECK(bad.body.find("\"quarantined\"") != std::string::npos);
    auto big = d.post(fixture("platform_oversized_body.json"), auth("oversized-1"));
    CHECK(big.status == 200);
    CHECK(big.body.find("too large") != std::string::npos);
    CHECK(d.post(fixture("platform_web_text_customer.json"), {{"Authorization", "Token nope"}})
              .status == 401);
    CHECK(d.post(fixture("platform_web_text_customer.json"), {}).status == 401);
    REQUIRE(d.wait_log("quarantined sentry-trace oversized-1"));
    d.idle(2500ms);
    CHECK(d.records(0, 1s).empty());
    d.stop();
    std::string audit = d.audit();
    CHECK(audit.find("\tquarantine\t-\tinstance=chat;ref=sentry-trace malformed-1") != std::string::npos);
    CHECK(audit.find("\tquarantine\t-\tinstance=chat;ref=sentry-trace oversized-1") != std::string::npos);
    check_log_clean(d.log(), {"Notreal", "L1 0A", "damp", "Nowhere Walk", "L8 0ZZ"});
}

TEST_CASE("daemon: APIchat deliveries are refused 401 by default and accepted with allow_apichat") {
    std::string body = fixture("apichat_bot_message.json");
    {
        Daemon d(kFast);
        CHECK(d.post(body, {}).status == 401);
        d.stop();
    }
    Daemon d(std::string(kFast) + "allow_apichat = true\n");
    CHECK(d.post(body, {}).status == 200);
    auto recs = d.records(1);
    REQUIRE(recs.size() == 1);
    CHECK(text(recs[0], "meta.channel") == "web_chat");
    CHECK(text(recs[0], "fields.content.turns[0].author") == "bot");
    CHECK(text(recs[0], "fields.hints.topic") == "housing");
    d.stop();
    CHECK(d.data_bytes().find("fake-customer-token") == std::string::npos);
}

TEST_CASE("daemon: kill -9 between acknowledged messages loses none of them") {
    Daemon d("quiet_period = \"3s\"\n");
    auto lines = fixture_lines("platform_pii_card_and_nino_transcript.jsonl");
    for (int k = 0; k < 3; ++k) CHECK(d.post(lines[k], auth("k" + std::to_string(k))).status == 200);
    d.kill9();
    d.start();
    // The retry of a message whose 2xx was lost is not taken twice.
    CHECK(d.post(lines[2], auth("k2")).body ==
          "{\"status\":\"accepted\",\"messages\":0,\"duplicates\":1}");
    for (int k = 3; k < 5; ++k) CHECK(d.post(lines[k], auth("k" + std::to_string(k))).status == 200);
    auto recs = d.records(1);
    REQUIRE(recs.size() == 1);
    CHECK(text(recs[0], "fields.content.turns[0].author") == "bot");
    CHECK(text(recs[0], "fields.content.turns[4].author") == "agent");
    CHECK(at(recs[0], "fields.content.turns[5]").isEmpty());
    d.idle(4s);
    CHECK(d.records(1, 1s).size() == 1);
    d.stop();
}

TEST_CASE("daemon: at expiry the erase hook deletes the customer at Landbot and the core audits "
          "it confirmed") {
    landbot_test::FakeLandbotApi api;
    api.fallback("DELETE", {204, "", ""});
    // A message from now, kept 20 s.
    std::string body = fixture("platform_web_text_customer.json");
    for (std::string ts : {"1736154061.482913"}) {
        std::string now = std::to_string(std::time(nullptr)) + ".5";
        for (auto at = body.find(ts); at != std::string::npos; at = body.find(ts))
            body.replace(at, ts.size(), now);
    }
    Daemon d("quiet_period = \"1s\"\napi_base = \"" + api.base() +
                 "\"\napi_token = \"env:LANDBOT_AGENT_TOKEN\"\n",
             "[retention]\nsweep_interval = \"1s\"\n[[retention.policy]]\nsource = \"chat\"\n"
             "retention = \"20s\"\n",
             {"LANDBOT_AGENT_TOKEN=agent-token-NOT-REAL"});
    CHECK(d.post(body, auth("erase-1")).status == 200);
    REQUIRE(d.records(1).size() == 1);
    // Chunks expire by the minute: allow for it.
    REQUIRE(d.wait_log("erase .*customer deleted at Landbot", 120s));
    auto seen = api.seen();
    REQUIRE(seen.size() >= 2);
    CHECK(seen[0].method == "DELETE");
    CHECK(seen[0].uri == "/v1/customers/500100201/");
    CHECK(seen[0].authorization == "Token agent-token-NOT-REAL");
    CHECK(seen[1].method == "GET");
    d.idle(1s);
    d.stop();
    std::string audit = d.audit();
    CHECK(audit.find("instance=chat;target=source;reason=retention;outcome=confirmed") !=
          std::string::npos);
    check_log_clean(d.log(), {"agent-token-NOT-REAL", "recycling"});
}
