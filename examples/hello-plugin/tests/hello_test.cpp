// Tests of hello-source with the SDK's test harness: the built module is
// loaded as the daemon loads it, with no daemon running.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <switchboard/testing.hpp>

#include <cstdlib>
#include <string>

using sb::testing::Harness;

namespace {

// Set by meson test to the module it just built.
std::string module_path() {
    const char* p = std::getenv("HELLO_PLUGIN");
    if (!p) FAIL("HELLO_PLUGIN is not set (run through meson test)");
    return p;
}

} // namespace

TEST_CASE("the descriptor says what the plugin is") {
    Harness h(module_path());
    const sb_plugin_descriptor& d = h.descriptor();
    CHECK(std::string(d.name) == "hello-source");
    CHECK(d.kind == SB_KIND_SOURCE);
    CHECK((d.capabilities & SB_CAP_TIMERS) != 0);
    CHECK((d.capabilities & SB_CAP_HTTP) != 0);
    CHECK((d.capabilities & SB_CAP_ERASE) != 0);
    CHECK((d.capabilities & SB_CAP_POLL) == 0);
}

TEST_CASE("a greeting every `every`, numbered, with its categories") {
    Harness h(module_path());
    h.config("greeting", "\"Good morning\"").config("every", "\"10s\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    h.advance(9'999);
    CHECK(h.emitted().empty());
    h.advance(1);
    REQUIRE(h.emitted().size() == 1);
    h.advance(20'000);
    REQUIRE(h.emitted().size() == 3);

    const auto& r = h.emitted()[2];
    CHECK(r.value("greeting.text") == "Good morning");
    CHECK(r.category("greeting.text") == "content.free_text");
    CHECK(r.value("greeting.number") == "3");
    CHECK(r.category("greeting.number") == "reference.internal");
    CHECK(r.meta("channel") == "sample");
    CHECK(r.meta("external_id") == "hello-test-3");
    CHECK(h.counter("greetings") == 3);
}

TEST_CASE("defaults: the standard greeting once a minute") {
    Harness h(module_path());
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    h.advance(60'000);
    REQUIRE(h.emitted().size() == 1);
    CHECK(h.emitted()[0].value("greeting.text") == "Hello from Switchboard");
}

TEST_CASE("a restart carries on numbering from the committed count") {
    Harness h(module_path());
    h.config("every", "\"1s\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    h.advance(2'000);
    h.destroy();
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    h.advance(1'000);
    REQUIRE(h.emitted().size() == 3);
    CHECK(h.emitted()[2].value("greeting.number") == "3");
}

TEST_CASE("a greeting the journal cannot take is not counted as sent") {
    Harness h(module_path());
    h.config("every", "\"1s\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    h.journal_available(false);
    h.advance(1'000);
    CHECK(h.emitted().empty());
    CHECK(h.counter("greetings_not_committed") == 1);
    h.journal_available(true);
    h.advance(1'000);
    REQUIRE(h.emitted().size() == 1);
    CHECK(h.emitted()[0].value("greeting.number") == "1");
}

TEST_CASE("bad config is refused before the plugin runs, naming the key") {
    Harness h(module_path());
    h.config("every", "\"soon\"");
    CHECK_THROWS_WITH(h.create(), Catch::Contains("'every'"));
    h.config("every", "\"500ms\"");
    CHECK_THROWS_WITH(h.create(), Catch::Contains("below the minimum"));
    h.config("every", "\"5s\"").config("greting", "\"typo\"");
    CHECK_THROWS_WITH(h.create(), Catch::Contains("unknown config key 'greting'"));
}

TEST_CASE("the webhook emits a message and answers once it is committed") {
    Harness h(module_path());
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    auto reply = h.http("POST", "/hooks/hello/test", "My bin was not collected on Monday");
    CHECK(reply.status == 202);
    CHECK(reply.body == R"({"status":"ok"})");
    REQUIRE(h.emitted().size() == 1);
    CHECK(h.emitted()[0].value("message.text") == "My bin was not collected on Monday");
    CHECK(h.emitted()[0].category("message.text") == "content.free_text");

    CHECK(h.http("POST", "/hooks/hello/test", "").status == 400);
    CHECK(h.http("POST", "/hooks/hello/test", std::string(5000, 'x')).status == 413);
    h.journal_available(false);
    CHECK(h.http("POST", "/hooks/hello/test", "hello").status == 503);
    CHECK(h.http("GET", "/hooks/hello/test").status == 404);
    // Personal data never reaches the logs.
    CHECK_FALSE(h.logged("bin was not collected"));
}

TEST_CASE("erase requests are acknowledged") {
    Harness h(module_path());
    h.config("every", "\"1s\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    h.advance(1'000);
    REQUIRE(h.emitted().size() == 1);
    CHECK(h.erase(h.emitted()[0]) == SB_OK);
    CHECK(h.counter("erase_requests") == 1);
}
