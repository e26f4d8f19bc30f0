// zmq-feed through its built .so and the SDK harness, with a real DEALER
// client (feed_client.hpp) on loopback speaking docs/feed-protocol.md:
// CURVE admission by key, plaintext refused, credit, ACKs, resends, erase
// notices and receipts, malformed messages.
#include "feed_client.hpp"

#include <catch2/catch.hpp>

#include <switchboard/testing.hpp>

#include <cstdlib>
#include <regex>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using feedtest::FeedClient;
using feedtest::KeyPair;
using sb::testing::Harness;
using sb::testing::TestRecord;
using sb::testing::toml_string;

std::string module() {
    const char* dir = std::getenv("SB_PLUGIN_DIR");
    if (!dir) FAIL("SB_PLUGIN_DIR is not set (run through meson test)");
    return std::string(dir) + "/destinations/zmq-feed/zmq-feed.so";
}

// Takes one RECORD message for each seq from `first` to `last`, in order.
void expect_records(FeedClient& c, int first, int last) {
    for (int s = first; s <= last; ++s) {
        auto r = c.expect("RECORD");
        REQUIRE(r);
        CHECK(r->integer("seq") == s);
    }
}

// The endpoint the instance logged ("listening on tcp://127.0.0.1:N ..."),
// the latest one after a restart.
std::string endpoint_of(Harness& h) {
    std::string out;
    h.wait_until([&] {
        static const std::regex re("listening on (tcp://[0-9.]+:[0-9]+)");
        for (const auto& l : h.logs()) {
            std::smatch m;
            if (std::regex_search(l.message, m, re)) out = m[1];
        }
        return !out.empty();
    }, 2s);
    if (out.empty()) FAIL("the instance did not log its endpoint");
    return out;
}

struct Keys {
    KeyPair server = KeyPair::make();
    KeyPair department = KeyPair::make();
    KeyPair stranger = KeyPair::make();
    Keys() { ::setenv("ZMQ_FEED_TEST_SERVER_KEY", server.secret.c_str(), 1); }
};

// A CURVE feed on an ephemeral loopback port admitting `department`.
void configure(Harness& h, const Keys& k) {
    h.instance_name("housing")
        .config("endpoint", toml_string("tcp://127.0.0.1:*"))
        .config("server_secret_key", toml_string("env:ZMQ_FEED_TEST_SERVER_KEY"))
        .config("clients", "[" + toml_string(k.department.pub) + "]");
}

// configure(), then create and start the instance.
void start_feed(Harness& h, const Keys& k) {
    configure(h, k);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
}

TestRecord record(const std::string& id, const std::string& text = "bin missed") {
    TestRecord r = Harness::record();
    r.meta("id", id);
    r.meta("expires_at", "2025-02-03T09:00:00.000Z");
    r.set("content.text", text, "content.free_text");
    return r;
}

// The delivery id the harness used for record `id` (last attempt).
std::uint64_t delivery_id(Harness& h, const std::string& id) {
    std::uint64_t out = 0;
    for (const auto& d : h.deliveries())
        if (d.record_id == id) out = d.delivery_id;
    return out;
}

bool completed(Harness& h, std::uint64_t id, sb_status status = SB_OK) {
    for (const auto& c : h.completions())
        if (c.id == id && c.status == status) return true;
    return false;
}

// For wait_until predicates (which run with the harness locked, so
// Harness::logged cannot be used in them).
bool in_logs(Harness& h, const std::string& needle) {
    for (const auto& l : h.logs())
        if (l.message.find(needle) != std::string::npos) return true;
    return false;
}

std::size_t completion_count(Harness& h) {
    std::size_t n = 0;
    h.wait_until([&] {
        n = h.completions().size();
        return true;
    });
    return n;
}

} // namespace

TEST_CASE("zmq-feed: a listed CURVE key is admitted; an unlisted key gets nothing and is reported") {
    Keys k;
    Harness h(module());
    start_feed(h, k);
    const std::string ep = endpoint_of(h);
    CHECK(h.logged(k.server.pub)); // the server's public key is logged for the departments
    CHECK_FALSE(h.logged(k.server.secret));
    REQUIRE(h.deliver(record("rec-1")) == SB_PENDING);

    FeedClient stranger(ep, k.server.pub, &k.stranger);
    stranger.hello(0, 10);
    CHECK_FALSE(stranger.receive(700ms)); // no WELCOME, no RECORD: the handshake never completed
    CHECK(h.wait_until([&] { return h.counters()["handshakes_refused"] >= 1; }, 3s));
    CHECK(h.logged("handshake refused: client key " + k.stranger.pub));

    FeedClient dept(ep, k.server.pub, &k.department);
    dept.hello(0, 10);
    auto w = dept.expect("WELCOME");
    REQUIRE(w);
    CHECK(w->integer("protocol") == 1);
    CHECK(w->string("destination") == "housing");
    CHECK(w->integer("next") == 1);
    auto r = dept.expect("RECORD");
    REQUIRE(r);
    CHECK(r->integer("seq") == 1);
    CHECK(r->string("id") == "rec-1");
    CHECK(r->string("purpose") == "testing");
    CHECK(r->string("profile") == "test");
    CHECK(r->integer("profile_version") == 1);
    CHECK(r->string("expires_at") == "2025-02-03T09:00:00.000Z");
    CHECK(r->body->getObject("record")->getObject("fields")->getObject("content")->getValue<std::string>("text") ==
          "bin missed");
    // The stranger still gets nothing, whatever it asks for.
    stranger.hello(0, 10000);
    CHECK_FALSE(stranger.receive(300ms));
    // Record content never reaches the logs.
    CHECK_FALSE(h.logged("bin missed"));
    h.stop();
}

TEST_CASE("zmq-feed: a refused handshake is audited with the key that tried and the peer's address, "
          "at most once a minute per key") {
    Keys k;
    Harness h(module());
    start_feed(h, k);
    const std::string ep = endpoint_of(h);
    {
        FeedClient stranger(ep, k.server.pub, &k.stranger);
        stranger.hello(0, 10);
        CHECK_FALSE(stranger.receive(300ms));
    }
    REQUIRE(h.wait_until([&] { return h.counters()["handshakes_refused"] >= 1; }, 3s));
    auto entries = h.audits("handshake_refused");
    REQUIRE(entries.size() == 1);
    CHECK(entries[0].record_id.empty());
    CHECK(entries[0].detail.find("key=" + k.stranger.pub + " ") != std::string::npos);
    CHECK(entries[0].detail.find(" address=127.0.0.1") != std::string::npos);
    CHECK(entries[0].detail.find(" refusals=1") != std::string::npos);

    // The same key again within the minute: counted, not audited again.
    {
        FeedClient again(ep, k.server.pub, &k.stranger);
        again.hello(0, 10);
        CHECK_FALSE(again.receive(300ms));
    }
    REQUIRE(h.wait_until([&] { return h.counters()["handshakes_refused"] >= 2; }, 3s));
    CHECK(h.audits("handshake_refused").size() == 1);

    // Another unlisted key has its own limit: audited at once.
    KeyPair other = KeyPair::make();
    {
        FeedClient third(ep, k.server.pub, &other);
        third.hello(0, 10);
        CHECK_FALSE(third.receive(300ms));
    }
    REQUIRE(h.wait_until([&] { return h.counters()["handshakes_refused"] >= 3; }, 3s));
    entries = h.audits("handshake_refused");
    REQUIRE(entries.size() == 2);
    CHECK(entries[1].detail.find("key=" + other.pub + " ") != std::string::npos);
    // The department's own key is admitted and never audited as refused.
    FeedClient dept(ep, k.server.pub, &k.department);
    dept.hello(0, 10);
    CHECK(dept.expect("WELCOME"));
    CHECK(h.audits("handshake_refused").size() == 2);
    h.stop();
}

TEST_CASE("zmq-feed: a plaintext feed is refused unless insecure = true; bad keys are named") {
    Keys k;
    {
        Harness h(module());
        h.config("endpoint", toml_string("tcp://127.0.0.1:*"));
        CHECK(h.create() == SB_ERR_INVALID);
        CHECK(h.last_error().find("server_secret_key") != std::string::npos);
        CHECK(h.last_error().find("insecure = true") != std::string::npos);
    }
    {
        Harness h(module());
        configure(h, k);
        h.config("clients", "[" + toml_string(k.department.pub) + ", \"not-a-key\"]");
        CHECK(h.create() == SB_ERR_INVALID);
        CHECK(h.last_error().find("'clients'[1]") != std::string::npos);
    }
    {
        Harness h(module());
        configure(h, k);
        h.unset("clients");
        CHECK(h.create() == SB_ERR_INVALID);
        CHECK(h.last_error().find("clients") != std::string::npos);
    }
    {
        ::setenv("ZMQ_FEED_TEST_BAD_KEY", "short", 1);
        Harness h(module());
        configure(h, k);
        h.config("server_secret_key", toml_string("env:ZMQ_FEED_TEST_BAD_KEY"));
        CHECK(h.create() == SB_ERR_INVALID);
        CHECK(h.last_error().find("server_secret_key") != std::string::npos);
        CHECK_FALSE(h.logged("short"));
    }
    {
        // Explicitly insecure: plaintext works, and says so in the log.
        Harness h(module());
        h.config("endpoint", toml_string("tcp://127.0.0.1:*")).config("insecure", "true");
        REQUIRE(h.create() == SB_OK);
        REQUIRE(h.start() == SB_OK);
        CHECK(h.logged("PLAINTEXT"));
        FeedClient c(endpoint_of(h));
        c.hello(0, 1);
        CHECK(c.expect("WELCOME"));
        h.stop();
    }
    {
        // A CURVE feed does not talk to a plaintext client.
        Harness h(module());
        start_feed(h, k);
        FeedClient c(endpoint_of(h));
        c.hello(0, 1);
        CHECK_FALSE(c.receive(500ms));
        h.stop();
    }
}

TEST_CASE("zmq-feed: records in order within the credit; ACK completes them; HELLO acked=S acknowledges") {
    Keys k;
    Harness h(module());
    start_feed(h, k);
    for (int i = 1; i <= 10; ++i) REQUIRE(h.deliver(record("rec-" + std::to_string(i))) == SB_PENDING);

    FeedClient c(endpoint_of(h), k.server.pub, &k.department);
    c.hello(0, 3);
    REQUIRE(c.expect("WELCOME"));
    expect_records(c, 1, 3);
    CHECK_FALSE(c.receive(300ms)); // credit used up
    CHECK(completion_count(h) == 0);

    c.ack(2);
    expect_records(c, 4, 5);
    CHECK_FALSE(c.receive(200ms));
    REQUIRE(h.wait_until([&] { return h.completions().size() == 2; }, 2s));
    CHECK(completed(h, delivery_id(h, "rec-1")));
    CHECK(completed(h, delivery_id(h, "rec-2")));
    CHECK(h.completions()[0].id == delivery_id(h, "rec-1")); // in order

    // A new session acknowledging up to 4: 3 and 4 complete; 5 is resent
    // first, then 6 and 7 within a credit of 3.
    FeedClient again(endpoint_of(h), k.server.pub, &k.department);
    again.hello(4, 3);
    auto w = again.expect("WELCOME");
    REQUIRE(w);
    CHECK(w->integer("next") == 5);
    expect_records(again, 5, 7);
    REQUIRE(h.wait_until([&] { return h.completions().size() == 4; }, 2s));
    CHECK(completed(h, delivery_id(h, "rec-4")));
    again.ack(10); // beyond what was sent: taken as 7, with an ERROR
    auto e = again.expect("ERROR");
    REQUIRE(e);
    CHECK(e->string("error").find("beyond the last record sent (7)") != std::string::npos);
    REQUIRE(h.wait_until([&] { return h.completions().size() == 7; }, 2s));
    expect_records(again, 8, 10);
    again.ack(10);
    REQUIRE(h.wait_until([&] { return h.completions().size() == 10; }, 2s));
    // A later delivery of something the client acknowledged is done at once.
    REQUIRE(h.deliver(record("rec-3")) == SB_OK);
    h.stop();
}

TEST_CASE("zmq-feed: version 2 sends RECORDS, several records a message in order within the credit") {
    Keys k;
    Harness h(module());
    start_feed(h, k);
    for (int i = 1; i <= 10; ++i) REQUIRE(h.deliver(record("rec-" + std::to_string(i))) == SB_PENDING);

    // The seqs of the next RECORDS message; each element a RECORD body.
    auto next_batch = [](FeedClient& c) {
        std::vector<std::int64_t> seqs;
        auto m = c.expect("RECORDS");
        if (!m || !m->body) return seqs;
        auto records = m->body->getArray("records");
        if (!records) return seqs;
        for (std::size_t i = 0; i < records->size(); ++i) {
            auto r = records->getObject(static_cast<unsigned>(i));
            seqs.push_back(r->getValue<Poco::Int64>("seq"));
            CHECK(r->getValue<std::string>("id") == "rec-" + std::to_string(seqs.back()));
            CHECK(r->getValue<std::string>("purpose") == "testing");
            CHECK(r->getValue<std::string>("expires_at") == "2025-02-03T09:00:00.000Z");
            CHECK(r->getObject("record")->getObject("fields")->getObject("content")->getValue<std::string>(
                      "text") == "bin missed");
        }
        return seqs;
    };
    FeedClient c(endpoint_of(h), k.server.pub, &k.department);
    c.hello(0, 4, 2);
    auto w = c.expect("WELCOME");
    REQUIRE(w);
    CHECK(w->integer("protocol") == 2);
    CHECK(next_batch(c) == std::vector<std::int64_t>{1, 2, 3, 4});
    CHECK_FALSE(c.receive(300ms)); // credit used up
    c.ack(4);
    CHECK(next_batch(c) == std::vector<std::int64_t>{5, 6, 7, 8});
    c.ack(8);
    CHECK(next_batch(c) == std::vector<std::int64_t>{9, 10});
    c.ack(10);
    REQUIRE(h.wait_until([&] { return h.completions().size() == 10; }, 2s));

    // At most 256 records a message, whatever the credit.
    for (int i = 11; i <= 310; ++i) REQUIRE(h.deliver(record("rec-" + std::to_string(i))) == SB_PENDING);
    FeedClient again(endpoint_of(h), k.server.pub, &k.department);
    again.hello(10, 1000, 2);
    REQUIRE(again.expect("WELCOME"));
    std::vector<std::int64_t> all;
    std::size_t messages = 0;
    while (all.size() < 300) {
        auto seqs = next_batch(again);
        REQUIRE(!seqs.empty());
        CHECK(seqs.size() <= 256);
        all.insert(all.end(), seqs.begin(), seqs.end());
        ++messages;
    }
    CHECK(messages >= 2);
    for (std::size_t i = 0; i < all.size(); ++i) CHECK(all[i] == static_cast<std::int64_t>(11 + i));
    again.ack(310);
    REQUIRE(h.wait_until([&] { return h.completions().size() == 310; }, 3s));

    // A version 1 session on the same feed gets a RECORD each.
    REQUIRE(h.deliver(record("rec-311")) == SB_PENDING);
    REQUIRE(h.deliver(record("rec-312")) == SB_PENDING);
    FeedClient old(endpoint_of(h), k.server.pub, &k.department);
    old.hello(310, 10);
    w = old.expect("WELCOME");
    REQUIRE(w);
    CHECK(w->integer("protocol") == 1);
    expect_records(old, 311, 312);
    old.ack(312);
    REQUIRE(h.wait_until([&] { return h.completions().size() == 312; }, 3s));

    // And at most about 256 KiB a message: two records of 100 KB go
    // together, the third in a message of its own.
    const std::string big(100'000, 'b');
    for (int i = 313; i <= 315; ++i)
        REQUIRE(h.deliver(record("rec-" + std::to_string(i), big)) == SB_PENDING);
    FeedClient large(endpoint_of(h), k.server.pub, &k.department);
    large.hello(312, 10, 2);
    REQUIRE(large.expect("WELCOME"));
    auto sizes = [&] {
        auto m = large.expect("RECORDS");
        REQUIRE(m);
        CHECK(m->text.size() <= 256u * 1024 + 64);
        return m->body->getArray("records")->size();
    };
    CHECK(sizes() == 2);
    CHECK(sizes() == 1);
    h.stop();
}

TEST_CASE("zmq-feed: unacknowledged records are resent after a reconnect and after ack_timeout") {
    Keys k;
    Harness h(module());
    configure(h, k);
    h.config("ack_timeout", toml_string("400ms"));
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    const std::string ep = endpoint_of(h);
    for (int i = 1; i <= 4; ++i) REQUIRE(h.deliver(record("rec-" + std::to_string(i))) == SB_PENDING);

    {
        FeedClient c(ep, k.server.pub, &k.department);
        c.hello(0, 100);
        REQUIRE(c.expect("WELCOME"));
        for (int s = 1; s <= 4; ++s) REQUIRE(c.expect("RECORD"));
        c.ack(1);
        REQUIRE(h.wait_until([&] { return h.completions().size() == 1; }, 2s));
        // Killed mid-stream: no BYE.
    }
    FeedClient c(ep, k.server.pub, &k.department);
    c.hello(1, 100);
    REQUIRE(c.expect("WELCOME"));
    std::vector<std::int64_t> seqs;
    for (int s = 2; s <= 4; ++s) {
        auto r = c.expect("RECORD");
        REQUIRE(r);
        seqs.push_back(r->integer("seq"));
    }
    CHECK(seqs == std::vector<std::int64_t>{2, 3, 4});
    // No ACK: after ack_timeout the same records come again, same seq and id.
    auto t0 = std::chrono::steady_clock::now();
    auto r = c.expect("RECORD", 3s);
    REQUIRE(r);
    CHECK(std::chrono::steady_clock::now() - t0 >= 300ms);
    CHECK(r->integer("seq") == 2);
    CHECK(r->string("id") == "rec-2");
    CHECK(h.wait_until([&] { return h.counters()["records_resent"] >= 3; }, 2s));
    c.ack(4);
    REQUIRE(h.wait_until([&] { return h.completions().size() == 4; }, 2s));
    h.stop();
}

TEST_CASE("zmq-feed: erase notices are confirmed with a receipt; a retried request is answered at once") {
    Keys k;
    Harness h(module());
    configure(h, k);
    h.config("ack_timeout", toml_string("500ms")).config("receipt_deadline", toml_string("1h"));
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    const std::string ep = endpoint_of(h);

    // Offline department: the notice waits for its HELLO.
    REQUIRE(h.erase("rec-7", {}, SB_ERASE_REQUEST) == SB_PENDING);
    FeedClient c(ep, k.server.pub, &k.department);
    c.hello(0, 10);
    REQUIRE(c.expect("WELCOME"));
    auto n = c.expect("ERASE");
    REQUIRE(n);
    CHECK(n->string("record_id") == "rec-7");
    CHECK(n->string("reason") == "request");
    const std::string notice = n->string("notice");
    CHECK(!notice.empty());
    // Unanswered: resent after ack_timeout.
    auto again = c.expect("ERASE", 3s);
    REQUIRE(again);
    CHECK(again->string("notice") == notice);
    CHECK(completion_count(h) == 0);

    // A wrong notice id is refused; the right one completes the request.
    c.send("ERASED", "{\"notice\":\"E-nope\",\"record_id\":\"rec-7\",\"receipt\":\"x\"}");
    REQUIRE(c.expect("ERROR"));
    c.send("ERASED", "{\"notice\":" + sb::json_quote(notice) +
                         ",\"record_id\":\"rec-7\",\"receipt\":\"deleted from housing-cases by feed-client\"}");
    REQUIRE(h.wait_until([&] { return h.completions().size() == 1; }, 2s));
    CHECK(h.completions()[0].status == SB_OK);
    CHECK(h.completions()[0].receipt == "deleted from housing-cases by feed-client");
    CHECK(h.state().count("erased/rec-7"));

    // The host asks again (say its wait timed out): answered at once.
    REQUIRE(h.erase("rec-7") == SB_PENDING);
    REQUIRE(h.completions().size() == 2);
    CHECK(h.completions()[1].receipt == "deleted from housing-cases by feed-client");
    // And after a restart of the instance too (the receipt is in its state).
    h.destroy();
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    REQUIRE(h.erase("rec-7") == SB_PENDING);
    REQUIRE(h.completions().size() == 3);
    CHECK(h.completions()[2].receipt == "deleted from housing-cases by feed-client");
    h.stop();
}

TEST_CASE("zmq-feed: an erase notice without a receipt past receipt_deadline is reported") {
    Keys k;
    Harness h(module());
    configure(h, k);
    h.config("receipt_deadline", toml_string("1h"));
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    REQUIRE(h.erase("rec-9") == SB_PENDING);
    CHECK_FALSE(h.wait_until([&] { return in_logs(h, "no receipt after receipt_deadline"); }, 300ms));
    h.advance(3'600'000);
    CHECK(h.wait_until([&] { return in_logs(h, "erase notice for record rec-9 has no receipt after receipt_deadline"); },
                       2s));
    CHECK(h.wait_until([&] { return h.gauges()["erase_receipts_overdue"] == 1; }, 2s));
    h.stop();
}

TEST_CASE("zmq-feed: malformed messages get an ERROR and the session carries on") {
    Keys k;
    Harness h(module());
    start_feed(h, k);
    FeedClient c(endpoint_of(h), k.server.pub, &k.department);
    auto error_for = [&](const std::vector<std::string>& frames) -> std::string {
        c.send_frames(frames);
        auto e = c.expect("ERROR", 2s);
        if (!e || !e->body) return "(no ERROR)";
        return e->string("error");
    };
    CHECK(error_for({"HELLO"}).find("two frames") != std::string::npos);
    CHECK(error_for({"HELLO", "{}", "{}"}).find("two frames") != std::string::npos);
    CHECK(error_for({"GIMME", "{}"}) == "unknown message type 'GIMME'");
    CHECK(error_for({std::string("\x01\xff<script>", 10), "{}"}) == "unknown message type");
    CHECK(error_for({"HELLO", "{not json"}) == "HELLO: the body is not a JSON object");
    CHECK(error_for({"HELLO", "[1,2]"}) == "HELLO: the body is not a JSON object");
    CHECK(error_for({"HELLO", "{\"protocol\":3,\"acked\":0,\"credit\":1}"}).find("protocol version 3") !=
          std::string::npos);
    CHECK(error_for({"HELLO", "{\"protocol\":0,\"acked\":0,\"credit\":1}"}).find("speaks 1 and 2") !=
          std::string::npos);
    CHECK(error_for({"HELLO", "{\"protocol\":1,\"acked\":-1,\"credit\":1}"}).find("'acked'") != std::string::npos);
    CHECK(error_for({"HELLO", "{\"protocol\":1,\"acked\":0,\"credit\":0}"}).find("'credit'") != std::string::npos);
    CHECK(error_for({"HELLO", "{\"protocol\":1,\"acked\":0,\"credit\":10001}"}).find("'credit'") !=
          std::string::npos);
    CHECK(error_for({"HELLO", "{\"protocol\":1,\"acked\":\"0\",\"credit\":5}"}).find("'acked'") !=
          std::string::npos);
    // Valid, but only in a session: the connection has said no HELLO.
    CHECK(error_for({"ACK", "{\"upto\":1}"}) == "ACK: no session on this connection; say HELLO first");
    CHECK(error_for({"REJECT", "{\"seq\":1,\"reason\":\"x\"}"}).find("say HELLO first") != std::string::npos);
    c.hello(0, 5);
    REQUIRE(c.expect("WELCOME"));
    CHECK(error_for({"ACK", "{\"upto\":true}"}).find("'upto'") != std::string::npos);
    CHECK(error_for({"REJECT", "{\"seq\":0,\"reason\":\"x\"}"}).find("'seq'") != std::string::npos);
    CHECK(error_for({"REJECT", "{\"seq\":1,\"reason\":\"\"}"}).find("'reason'") != std::string::npos);
    CHECK(error_for({"REJECT", "{\"seq\":99,\"reason\":\"x\"}"}) == "REJECT: seq 99 is not a record in flight");
    CHECK(error_for({"ERASED", "{\"notice\":\"E-1\"}"}).find("must be strings") != std::string::npos);
    CHECK(error_for({"ERASED", "{\"notice\":\"E-1\",\"record_id\":\"r\",\"receipt\":\"x\"}"})
              .find("no erase notice") != std::string::npos);
    CHECK(error_for({"ERASED", "{\"notice\":\"E-1\",\"record_id\":\"r\",\"receipt\":\"" +
                                   std::string(2000, 'x') + "\"}"})
              .find("'receipt'") != std::string::npos);
    // Still alive, and the session works.
    REQUIRE(h.deliver(record("rec-1")) == SB_PENDING);
    auto r = c.expect("RECORD");
    REQUIRE(r);
    CHECK(r->integer("seq") == 1);
    c.ack(1);
    REQUIRE(h.wait_until([&] { return h.completions().size() == 1; }, 2s));
    c.send("BYE", "{}");
    h.stop();
}

TEST_CASE("zmq-feed: ERROR names the message type and whether the session is over") {
    Keys k;
    Harness h(module());
    start_feed(h, k);
    FeedClient c(endpoint_of(h), k.server.pub, &k.department);
    c.send("ACK", "{\"upto\":3}");
    auto e = c.expect("ERROR");
    REQUIRE(e);
    CHECK(e->string("type") == "ACK");
    CHECK(e->body->getValue<bool>("fatal"));
    c.send("GIMME", "{}");
    e = c.expect("ERROR");
    REQUIRE(e);
    CHECK(e->body->isNull("type")); // the type itself was not understood
    CHECK_FALSE(e->body->getValue<bool>("fatal"));
    c.send("HELLO", "{\"protocol\":3,\"acked\":0,\"credit\":1}");
    e = c.expect("ERROR");
    REQUIRE(e);
    CHECK(e->string("type") == "HELLO");
    CHECK(e->body->getValue<bool>("fatal"));
    c.hello(0, 5);
    REQUIRE(c.expect("WELCOME"));
    c.ack(7); // beyond what was sent: answered, not fatal
    e = c.expect("ERROR");
    REQUIRE(e);
    CHECK(e->string("type") == "ACK");
    CHECK_FALSE(e->body->getValue<bool>("fatal"));
    h.stop();
}

TEST_CASE("zmq-feed: a connection without HELLO acknowledges nothing; WELCOME next with nothing held") {
    Keys k;
    Harness h(module());
    start_feed(h, k);
    const std::string ep = endpoint_of(h);
    for (int i = 1; i <= 3; ++i) REQUIRE(h.deliver(record("rec-" + std::to_string(i))) == SB_PENDING);
    FeedClient c(ep, k.server.pub, &k.department);
    c.hello(0, 10);
    REQUIRE(c.expect("WELCOME"));
    for (int s = 1; s <= 3; ++s) REQUIRE(c.expect("RECORD"));
    // The same key on another connection (a DEALER reconnected silently
    // gets a new one) ACKs without HELLO: refused, nothing completes.
    FeedClient other(ep, k.server.pub, &k.department);
    other.ack(3);
    auto e = other.expect("ERROR");
    REQUIRE(e);
    CHECK(e->body->getValue<bool>("fatal"));
    CHECK(completion_count(h) == 0);
    c.ack(3);
    REQUIRE(h.wait_until([&] { return h.completions().size() == 3; }, 2s));
    // Nothing held: next is one above the highest acknowledged (the
    // larger of the HELLO's acked and what this run has seen acknowledged).
    FeedClient again(ep, k.server.pub, &k.department);
    again.hello(2, 10);
    auto w = again.expect("WELCOME");
    REQUIRE(w);
    CHECK(w->integer("next") == 4);
    h.stop();
}

TEST_CASE("zmq-feed: WELCOME carries the feed id; a client of another numbering acknowledges nothing") {
    Keys k;
    Harness h(module());
    start_feed(h, k);
    const std::string ep = endpoint_of(h);
    for (int i = 1; i <= 3; ++i) REQUIRE(h.deliver(record("rec-" + std::to_string(i))) == SB_PENDING);
    std::string feed;
    {
        FeedClient c(ep, k.server.pub, &k.department);
        c.hello(0, 10);
        auto w = c.expect("WELCOME");
        REQUIRE(w);
        feed = w->string("feed");
        CHECK(std::regex_match(feed, std::regex("[0-9a-f]{16}")));
        CHECK(h.state().at("feed_id") == feed); // kept with the outbox: the same after a restart
    }
    // A position in another numbering (the journal was started afresh):
    // its acked=3 completes nothing; everything held comes from the start.
    FeedClient c(ep, k.server.pub, &k.department);
    c.send("HELLO", "{\"protocol\":1,\"acked\":3,\"credit\":10,\"feed\":\"0123456789abcdef\"}");
    auto w = c.expect("WELCOME");
    REQUIRE(w);
    CHECK(w->string("feed") == feed);
    CHECK(w->integer("next") == 1);
    auto r = c.expect("RECORD");
    REQUIRE(r);
    CHECK(r->integer("seq") == 1);
    CHECK(completion_count(h) == 0);
    CHECK(h.logged("not of this feed"));
    // The same numbering: acked is taken.
    FeedClient same(ep, k.server.pub, &k.department);
    same.send("HELLO", "{\"protocol\":1,\"acked\":2,\"credit\":10,\"feed\":" + sb::json_quote(feed) + "}");
    REQUIRE(same.expect("WELCOME"));
    REQUIRE(h.wait_until([&] { return h.completions().size() == 2; }, 2s));
    same.send("HELLO", "{\"protocol\":1,\"acked\":2,\"credit\":10,\"feed\":5}");
    auto e = same.expect("ERROR");
    REQUIRE(e);
    CHECK(e->string("error").find("'feed'") != std::string::npos);
    h.stop();
    // The id survives a restart of the instance (it is in its state).
    h.destroy();
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    FeedClient later(endpoint_of(h), k.server.pub, &k.department);
    later.hello(0, 1);
    auto w2 = later.expect("WELCOME");
    REQUIRE(w2);
    CHECK(w2->string("feed") == feed);
    h.stop();
}

TEST_CASE("zmq-feed: REJECT completes the delivery as a permanent failure; the rest flows on") {
    Keys k;
    Harness h(module());
    start_feed(h, k);
    for (int i = 1; i <= 3; ++i) REQUIRE(h.deliver(record("rec-" + std::to_string(i))) == SB_PENDING);
    FeedClient c(endpoint_of(h), k.server.pub, &k.department);
    c.hello(0, 2);
    REQUIRE(c.expect("WELCOME"));
    REQUIRE(c.expect("RECORD"));
    REQUIRE(c.expect("RECORD"));
    c.send("REJECT", "{\"seq\":2,\"reason\":\"schema v3 expected\\nby the case system\"}");
    REQUIRE(h.wait_until([&] { return h.completions().size() == 1; }, 2s));
    CHECK(h.completions()[0].id == delivery_id(h, "rec-2"));
    CHECK(h.completions()[0].status == SB_ERR_PERMANENT);
    CHECK(h.completions()[0].receipt == "rejected by the department: schema v3 expected by the case system");
    CHECK(h.logged("the department rejected record rec-2 (seq 2)"));
    // Its credit is free again: seq 3 comes; the ACK covers 1 and 3.
    auto r = c.expect("RECORD");
    REQUIRE(r);
    CHECK(r->integer("seq") == 3);
    c.ack(3);
    REQUIRE(h.wait_until([&] { return h.completions().size() == 3; }, 2s));
    CHECK(completed(h, delivery_id(h, "rec-1")));
    CHECK(completed(h, delivery_id(h, "rec-3")));
    c.send("REJECT", "{\"seq\":2,\"reason\":\"again\"}"); // settled already
    auto e = c.expect("ERROR");
    REQUIRE(e);
    CHECK(e->string("type") == "REJECT");
    h.stop();
}
