// The open311 destination through the SDK harness against a real GeoReport
// v2 endpoint played on 127.0.0.1 (the http tests' fake case system): the
// form body exactly as GeoReport v2 writes it, per-route service codes,
// attribute[] mapping, service_request_id or token as the receipt, the
// error list, retries and no personal data in any log line.
#include "fake_case_system.hpp"

#include <switchboard/testing.hpp>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

using casesys::Answer;
using casesys::FakeCaseSystem;
using sb::testing::Harness;
using sb::testing::toml_string;

namespace {

const char* kEmail = "zeb.quill@example.org";

std::string plugin() {
    const char* dir = std::getenv("SB_PLUGIN_DIR");
    if (!dir) FAIL("SB_PLUGIN_DIR is not set (run through meson test)");
    return std::string(dir) + "/destinations/open311/open311.so";
}

struct Env {
    Env() { ::setenv("OPEN311_TEST_KEY", "api-key-NOT-REAL", 1); }
};
const Env env;

sb::testing::TestRecord record(const std::string& id) {
    auto r = Harness::record();
    r.meta("id", id);
    r.set("citizen.first_name", "Zebedee", "identity.name");
    r.set("citizen.last_name", "Quillfeather", "identity.name");
    r.set("citizen.email", kEmail, "contact.email");
    r.set("citizen.phone", "07700 900461", "contact.phone");
    r.set("location.address", "1 High St, Anytown", "contact.address");
    r.set("location.lat", 53.4084, "location.coordinates");
    r.set("location.lon", -2.9916, "location.coordinates");
    r.set("query.text", "Bin not collected & lid broken", "content.free_text");
    r.set("bin.type", "recycling", "reference.internal");
    r.set("bin.colours[0]", "blue", "reference.internal");
    r.set("bin.colours[1]", "green", "reference.internal");
    return r;
}

void base_config(Harness& h, const FakeCaseSystem& sys) {
    h.config("endpoint", toml_string(sys.url("/open311/v2/")))
        .config("allow_http", "true")
        .config("auth", "\"none\"")
        .config("api_key", "\"env:OPEN311_TEST_KEY\"")
        .config("service_code", "\"literal:BIN01\"")
        .config("address_string", "\"location.address\"")
        .config("lat", "\"location.lat\"")
        .config("long", "\"location.lon\"")
        .config("first_name", "\"citizen.first_name\"")
        .config("last_name", "\"citizen.last_name\"")
        .config("email", "\"citizen.email\"")
        .config("phone", "\"citizen.phone\"")
        .config("description", "\"query.text\"")
        .config("attributes", "[\"BIN_TYPE=bin.type\", \"SOURCE=literal:switchboard\", "
                              "\"COLOURS=bin.colours[*]\", \"ABSENT=no.such.field\"]");
}

bool no_personal_data(const Harness& h) {
    return !h.logged("Zebedee") && !h.logged("Quillfeather") && !h.logged(kEmail) &&
           !h.logged("900461") && !h.logged("High St") && !h.logged("lid broken") &&
           !h.logged("api-key-NOT-REAL");
}

} // namespace

TEST_CASE("open311: the form body is exactly GeoReport v2; service_request_id is the receipt") {
    FakeCaseSystem sys;
    sys.fallback(Answer(201, "[{\"service_request_id\":\"638344\",\"service_notice\":\"within 5 days\","
                             "\"account_id\":null}]"));
    Harness h(plugin());
    base_config(h, sys);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    REQUIRE(h.deliver(record("rec-1")) == SB_PENDING);
    REQUIRE(h.completions().size() == 1);
    CHECK(h.completions()[0].status == SB_OK);
    CHECK(h.completions()[0].receipt == "638344");

    auto s = sys.seen().at(0);
    CHECK(s.method == "POST");
    CHECK(s.uri == "/open311/v2/requests.json");
    CHECK(s.header("content-type") == "application/x-www-form-urlencoded");
    CHECK(s.header("idempotency-key") == "rec-1");
    CHECK(s.body ==
          "api_key=api-key-NOT-REAL&service_code=BIN01&lat=53.4084&long=-2.9916"
          "&address_string=1%20High%20St%2C%20Anytown&email=zeb.quill%40example.org"
          "&first_name=Zebedee&last_name=Quillfeather&phone=07700%20900461"
          "&description=Bin%20not%20collected%20%26%20lid%20broken"
          "&attribute%5BBIN_TYPE%5D=recycling&attribute%5BSOURCE%5D=switchboard"
          "&attribute%5BCOLOURS%5D%5B%5D=blue&attribute%5BCOLOURS%5D%5B%5D=green");
    CHECK(h.counter("delivered") == 1);
    CHECK(no_personal_data(h));
}

TEST_CASE("open311: a deferred request's token is the receipt; per-route service codes; jurisdiction") {
    FakeCaseSystem sys;
    sys.fallback(Answer(200, "[{\"token\":\"12345\"}]"));
    Harness h(plugin());
    base_config(h, sys);
    h.config("service_code_by_purpose", "[\"fly_tipping=FLY02\", \"missed_bin=BIN03\"]")
        .config("jurisdiction_id", "\"city.gov.uk\"")
        .unset("api_key")
        .unset("attributes");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    REQUIRE(h.deliver(record("rec-1"), {"fly_tipping", "waste", 1}) == SB_PENDING);
    CHECK(h.completions().at(0).receipt == "token:12345");
    CHECK(sys.seen().at(0).body.rfind("jurisdiction_id=city.gov.uk&service_code=FLY02&lat=", 0) == 0);
    REQUIRE(h.deliver(record("rec-2"), {"other_purpose", "waste", 1}) == SB_PENDING);
    CHECK(sys.seen().at(1).body.find("service_code=BIN01&") != std::string::npos);
}

TEST_CASE("open311: the GeoReport error list is parsed; 4xx is permanent, 503 transient") {
    FakeCaseSystem sys;
    sys.script({Answer(400, "[{\"code\":400,\"description\":\"service_code BIN01 not found\"},"
                            "{\"code\":\"403\",\"description\":\"email zeb.quill@example.org refused\"}]"),
                Answer(503, "[{\"code\":503,\"description\":\"maintenance\"}]"),
                Answer(422, "<html>oops</html>", "text/html")});
    Harness h(plugin());
    base_config(h, sys);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.deliver(record("rec-1")) == SB_ERR_PERMANENT);
    INFO(h.last_error());
    CHECK(h.last_error().find("HTTP 400 (GeoReport errors: 400 service_code BIN## not found; 403 email "
                              "[email] refused)") != std::string::npos);
    CHECK(h.deliver(record("rec-2")) == SB_ERR_TRANSIENT);
    CHECK(h.last_error().find("HTTP 503 (GeoReport errors: 503 maintenance)") != std::string::npos);
    CHECK(h.deliver(record("rec-3")) == SB_ERR_PERMANENT);
    CHECK(h.last_error().find("HTTP 422 (answer is not a GeoReport error list)") != std::string::npos);
    CHECK(no_personal_data(h));
}

TEST_CASE("open311: records that cannot make a valid request are dead-lettered without a request") {
    FakeCaseSystem sys;
    Harness h(plugin());
    base_config(h, sys);
    h.config("service_code", "\"bin.code\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.deliver(record("rec-1")) == SB_ERR_PERMANENT);
    CHECK(h.last_error().find("no service_code") != std::string::npos);

    auto r = record("rec-2");
    r.set("bin.code", "BIN07");
    r.erase("location.address");
    r.erase("location.lat");
    CHECK(h.deliver(r) == SB_ERR_PERMANENT);
    CHECK(h.last_error().find("no location") != std::string::npos);
    CHECK(sys.count() == 0);
    CHECK(h.counter("unmappable") == 2);
}

TEST_CASE("open311: malformed success answers are delivered without a receipt, with a warning") {
    FakeCaseSystem sys;
    sys.script({Answer(201, "not json"), Answer(201, "[{\"service_notice\":\"ok\"}]"),
                Answer(201, "{\"service_request_id\":\"S-9\"}")});
    Harness h(plugin());
    base_config(h, sys);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.deliver(record("rec-1")) == SB_OK);
    CHECK(h.logged("no service_request_id or token stored: answer is not JSON"));
    CHECK(h.deliver(record("rec-2")) == SB_OK);
    CHECK(h.deliver(record("rec-3")) == SB_PENDING);
    CHECK(h.completions().at(0).receipt == "S-9");
    CHECK(h.counter("receipt_missing") == 2);
}

TEST_CASE("open311: long descriptions are cut to 4000 characters; config mistakes name the key") {
    FakeCaseSystem sys;
    sys.fallback(Answer(201, "[{\"service_request_id\":\"1\"}]"));
    Harness h(plugin());
    base_config(h, sys);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    auto r = record("rec-1");
    std::string text;
    for (int k = 0; k < 5000; ++k) text += "\xc3\xa9"; // é: 2 bytes, 1 character
    r.set("query.text", text);
    REQUIRE(h.deliver(r) == SB_PENDING);
    std::string body = sys.seen().at(0).body;
    std::size_t at = body.find("&description=") + 13;
    std::string desc = body.substr(at, body.find('&', at) - at);
    CHECK(desc.size() == 4000 * 6); // each é is %C3%A9
    CHECK(h.counter("descriptions_cut") == 1);

    auto refused = [&](auto&& tweak, const std::string& key) {
        Harness bad(plugin());
        base_config(bad, sys);
        tweak(bad);
        CHECK(bad.create() != SB_OK);
        INFO(bad.last_error());
        CHECK(bad.last_error().find(key) != std::string::npos);
    };
    refused([](Harness& x) { x.config("description", "\"query text\""); }, "'description'");
    refused([](Harness& x) { x.config("attributes", "[\"=x\"]"); }, "'attributes' entry 1");
    refused([](Harness& x) { x.unset("service_code"); }, "'service_code'");
    refused([](Harness& x) { x.config("service_code_by_purpose", "[\"nocode\"]"); }, "'service_code_by_purpose'");
    refused([](Harness& x) { x.unset("allow_http"); }, "'endpoint'");
}
