// The http destination through the SDK harness (the built .so in-process,
// fake clock), against a real case system on 127.0.0.1: answers, headers,
// signatures, retries, timeouts, malformed and oversized answers, TLS with a
// self-signed certificate, the erase hook, and no payload in any log line.
#include "fake_case_system.hpp"

#include <switchboard/testing.hpp>

#include <catch2/catch.hpp>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdlib>
#include <string>

using casesys::Answer;
using casesys::FakeCaseSystem;
using sb::testing::Harness;
using sb::testing::toml_string;
using namespace std::chrono_literals;

namespace {

const char* kCanaryName = "Zebedee Quillfeather";
const char* kCanaryPhone = "07700900461";
const char* kToken = "bearer-token-NOT-REAL";
const char* kKey = "hmac-key-0123456789-NOT-REAL";

std::string plugin() {
    const char* dir = std::getenv("SB_PLUGIN_DIR");
    if (!dir) FAIL("SB_PLUGIN_DIR is not set (run through meson test)");
    return std::string(dir) + "/destinations/http/http.so";
}

struct Env {
    Env() {
        ::setenv("HTTP_TEST_TOKEN", kToken, 1);
        ::setenv("HTTP_TEST_HMAC", kKey, 1);
    }
};
const Env env;

sb::testing::TestRecord record(const std::string& id) {
    auto r = Harness::record();
    r.meta("id", id);
    r.set("citizen.name", kCanaryName, "identity.name");
    r.set("citizen.phone", kCanaryPhone, "contact.phone");
    r.set("query.text", "bin not collected", "content.free_text");
    r.set("ref.n", 7, "reference.internal");
    return r;
}

void base_config(Harness& h, const FakeCaseSystem& sys) {
    h.config("url", toml_string(sys.url()))
        .config("allow_http", "true")
        .config("auth", "\"bearer\"")
        .config("bearer_token", "\"env:HTTP_TEST_TOKEN\"")
        .config("case_reference_field", "\"reference\"")
        .config("timeout", "\"2s\"");
}

std::string hmac_hex(const std::string& key, const std::string& data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(data.data()), data.size(), md, &len);
    std::string out;
    static const char* hex = "0123456789abcdef";
    for (unsigned k = 0; k < len; ++k) {
        out += hex[md[k] >> 4];
        out += hex[md[k] & 15];
    }
    return out;
}

bool no_personal_data(const Harness& h) {
    return !h.logged(kCanaryName) && !h.logged(kCanaryPhone) && !h.logged("bin not collected") &&
           !h.logged(kToken) && !h.logged(kKey);
}

} // namespace

TEST_CASE("http: a 201 with a case reference is delivered, the reference is the receipt; bearer, "
          "idempotency key and body as documented") {
    FakeCaseSystem sys;
    sys.fallback({201, "{\"reference\":\"CR-2025-0042\",\"status\":\"open\"}"});
    Harness h(plugin());
    base_config(h, sys);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK((h.descriptor().capabilities & SB_CAP_ASYNC_ACK) != 0);

    REQUIRE(h.deliver(record("rec-1"), {"missed_bin", "waste", 3}) == SB_PENDING);
    REQUIRE(h.completions().size() == 1);
    CHECK(h.completions()[0].status == SB_OK);
    CHECK(h.completions()[0].receipt == "CR-2025-0042");
    CHECK(h.completions()[0].id == h.deliveries().back().delivery_id);

    auto seen = sys.seen();
    REQUIRE(seen.size() == 1);
    const auto& s = seen[0];
    CHECK(s.method == "POST");
    CHECK(s.uri == "/cases");
    CHECK(s.header("authorization") == std::string("Bearer ") + kToken);
    CHECK(s.header("idempotency-key") == "rec-1");
    CHECK(s.header("x-switchboard-sequence") == "1");
    CHECK(s.header("x-switchboard-attempt") == "1");
    CHECK(s.header("content-type") == "application/json");
    CHECK(s.body.rfind("{\"record_id\":\"rec-1\",\"sequence\":1,\"purpose\":\"missed_bin\","
                       "\"profile\":\"waste\",\"profile_version\":3,\"record\":{",
                       0) == 0);
    CHECK(s.body.find("\"query\":{\"text\":\"bin not collected\"}") != std::string::npos);
    CHECK(h.counter("delivered") == 1);
    CHECK(no_personal_data(h));
}

TEST_CASE("http: a nested JSON path names the case reference; no field configured means plain SB_OK") {
    FakeCaseSystem sys;
    sys.fallback({200, "{\"data\":{\"cases\":[{\"id\":98765}]}}"});
    Harness h(plugin());
    base_config(h, sys);
    h.config("case_reference_field", "\"data.cases[0].id\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    REQUIRE(h.deliver(record("rec-1")) == SB_PENDING);
    CHECK(h.completions().at(0).receipt == "98765");

    Harness plain(plugin());
    base_config(plain, sys);
    plain.unset("case_reference_field");
    REQUIRE(plain.create() == SB_OK);
    REQUIRE(plain.start() == SB_OK);
    CHECK(plain.deliver(record("rec-2")) == SB_OK);
    CHECK(plain.completions().empty());
}

TEST_CASE("http: an HMAC signature the receiver can verify from the documented recipe") {
    FakeCaseSystem sys;
    Harness h(plugin());
    base_config(h, sys);
    h.unset("bearer_token");
    h.config("auth", "\"hmac\"").config("hmac_key", "\"env:HTTP_TEST_HMAC\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    REQUIRE(h.deliver(record("rec-1")) == SB_PENDING);
    auto s = sys.seen().at(0);
    std::string ts = s.header("x-switchboard-timestamp");
    CHECK(ts == std::to_string(Harness::kEpochMs / 1000));
    // The receiver's check: HMAC-SHA256(key, timestamp + "." + body).
    CHECK(s.header("x-switchboard-signature") == "sha256=" + hmac_hex(kKey, ts + "." + s.body));
    CHECK(s.header("x-switchboard-signature") != "sha256=" + hmac_hex("wrong-key-0123456789", ts + "." + s.body));
    CHECK(s.header("authorization").empty());
    CHECK(no_personal_data(h));
}

TEST_CASE("http: 503 and 429 are transient, the idempotency key and body stay the same on the retry") {
    FakeCaseSystem sys;
    sys.script({{503, "{\"error\":\"down\"}"}, {429, "{}"}});
    sys.fallback({201, "{\"reference\":\"CR-7\"}"});
    Harness h(plugin());
    base_config(h, sys);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    auto r = record("rec-9");
    CHECK(h.deliver(r) == SB_ERR_TRANSIENT);
    CHECK(h.last_error().find("HTTP 503") != std::string::npos);
    CHECK(h.deliver(r) == SB_ERR_TRANSIENT);
    CHECK(h.last_error().find("HTTP 429") != std::string::npos);
    CHECK(h.deliver(r) == SB_PENDING);
    auto seen = sys.seen();
    REQUIRE(seen.size() == 3);
    for (const auto& s : seen) {
        CHECK(s.header("idempotency-key") == "rec-9");
        CHECK(s.body == seen[0].body);
    }
    CHECK(seen[2].header("x-switchboard-attempt") == "3");
    CHECK(h.completions().at(0).receipt == "CR-7");
    CHECK(h.counter("transient_failures") == 2);
    CHECK(no_personal_data(h));
}

TEST_CASE("http: Retry-After holds further requests until the time asked for") {
    FakeCaseSystem sys;
    sys.script({{429, "{}", "application/json", {{"Retry-After", "30"}}}});
    sys.fallback({201, "{\"reference\":\"CR-8\"}"});
    Harness h(plugin());
    base_config(h, sys);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    auto r = record("rec-1");
    CHECK(h.deliver(r) == SB_ERR_TRANSIENT);
    CHECK(h.last_error().find("Retry-After 30s") != std::string::npos);
    h.advance(10'000);
    CHECK(h.deliver(r) == SB_ERR_TRANSIENT);
    CHECK(h.last_error().find("asked to wait") != std::string::npos);
    CHECK(sys.count() == 1); // no request sent
    CHECK(h.counter("deferred_retry_after") == 1);
    h.advance(20'000);
    CHECK(h.deliver(r) == SB_PENDING);
    CHECK(sys.count() == 2);
}

TEST_CASE("http: 400, 404, 422 and redirects are permanent (dead letter)") {
    FakeCaseSystem sys;
    sys.script({{400, "{\"error\":\"bad\"}"},
                {422, "{\"errors\":[\"name " + std::string(kCanaryName) + " invalid\"]}"},
                {404, ""},
                {302, "", "", {{"Location", "https://elsewhere.example/"}}}});
    Harness h(plugin());
    base_config(h, sys);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.deliver(record("rec-1")) == SB_ERR_PERMANENT);
    CHECK(h.last_error().find("HTTP 400") != std::string::npos);
    CHECK(h.deliver(record("rec-2")) == SB_ERR_PERMANENT);
    CHECK(h.last_error().find("HTTP 422") != std::string::npos);
    CHECK(h.deliver(record("rec-3")) == SB_ERR_PERMANENT);
    CHECK(h.deliver(record("rec-4")) == SB_ERR_PERMANENT);
    CHECK(h.last_error().find("redirects are not followed") != std::string::npos);
    CHECK(h.counter("permanent_failures") == 4);
    // The answer bodies (which may echo the payload) are never logged.
    CHECK(no_personal_data(h));
}

TEST_CASE("http: a slow server times out as transient; a refused connection is transient") {
    FakeCaseSystem sys;
    sys.script({{201, "{\"reference\":\"LATE\"}", "application/json", {}, 1500ms}});
    Harness h(plugin());
    base_config(h, sys);
    h.config("timeout", "\"300ms\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    auto t0 = std::chrono::steady_clock::now();
    CHECK(h.deliver(record("rec-1")) == SB_ERR_TRANSIENT);
    CHECK(std::chrono::steady_clock::now() - t0 < 1400ms);
    CHECK(h.last_error().find("timed out") != std::string::npos);
    CHECK(h.counter("timeouts") == 1);

    int port = 0;
    {
        FakeCaseSystem gone;
        port = gone.port();
    }
    Harness down(plugin());
    down.config("url", toml_string("http://127.0.0.1:" + std::to_string(port) + "/cases"))
        .config("allow_http", "true")
        .config("auth", "\"none\"");
    REQUIRE(down.create() == SB_OK);
    REQUIRE(down.start() == SB_OK);
    CHECK(down.deliver(record("rec-1")) == SB_ERR_TRANSIENT);
    CHECK(down.last_error().find("refused") != std::string::npos);
    CHECK(down.counter("network_errors") == 1);
    CHECK(down.logged("auth = \"none\""));
}

TEST_CASE("http: malformed and oversized answers give a clear reason, never a crash") {
    FakeCaseSystem sys;
    const std::string huge = "{\"reference\":\"CR-1\",\"pad\":\"" + std::string(200'000, 'x') + "\"}";
    sys.script({{201, "<html>not json " + std::string(kCanaryName) + "</html>", "text/html"},
                {201, "{\"reference\":"},
                {201, huge},
                {201, "{\"status\":\"ok\"}"},
                {201, "{\"reference\":\"has space\"}"},
                {201, "[1,2,3]"}});
    Harness h(plugin());
    base_config(h, sys);
    h.config("max_response", "\"64KiB\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    // Delivered (the case system took it) but no reference: a warning each.
    CHECK(h.deliver(record("rec-1")) == SB_OK);
    CHECK(h.logged("no case reference stored: answer is not JSON"));
    CHECK(h.deliver(record("rec-2")) == SB_OK);
    CHECK(h.deliver(record("rec-3")) == SB_OK);
    CHECK(h.logged("answer larger than max_response (65536 bytes)"));
    CHECK(h.deliver(record("rec-4")) == SB_OK);
    CHECK(h.logged("answer has no 'reference'"));
    CHECK(h.deliver(record("rec-5")) == SB_OK);
    CHECK(h.logged("is not a usable reference"));
    CHECK(h.deliver(record("rec-6")) == SB_OK);
    CHECK(h.completions().empty());
    CHECK(h.counter("reference_missing") == 6);
    CHECK(no_personal_data(h));

    // require_case_reference: the same answers are failures to retry.
    sys.script({{201, "garbage"}, {201, huge}});
    Harness strict(plugin());
    base_config(strict, sys);
    strict.config("require_case_reference", "true");
    REQUIRE(strict.create() == SB_OK);
    REQUIRE(strict.start() == SB_OK);
    CHECK(strict.deliver(record("rec-7")) == SB_ERR_TRANSIENT);
    CHECK(strict.last_error().find("without a case reference (answer is not JSON") != std::string::npos);
    CHECK(strict.deliver(record("rec-8")) == SB_ERR_TRANSIENT);
    CHECK(strict.last_error().find("max_response") != std::string::npos);
    CHECK(no_personal_data(strict));
}

TEST_CASE("http: TLS is verified by default; ca_file trusts the test CA; tls_verify = false warns") {
    casesys::SelfSigned cert;
    FakeCaseSystem sys(&cert);
    sys.fallback({201, "{\"reference\":\"CR-TLS\"}"});
    SECTION("refused by default") {
        Harness h(plugin());
        base_config(h, sys);
        h.unset("allow_http");
        REQUIRE(h.create() == SB_OK);
        REQUIRE(h.start() == SB_OK);
        CHECK(h.deliver(record("rec-1")) == SB_ERR_TRANSIENT);
        INFO(h.last_error());
        CHECK(h.last_error().find("TLS") != std::string::npos);
        CHECK(sys.count() == 0); // the handshake failed: no request reached the handler
    }
    SECTION("accepted with ca_file") {
        Harness h(plugin());
        base_config(h, sys);
        h.unset("allow_http");
        h.config("ca_file", toml_string(cert.cert.string()));
        REQUIRE(h.create() == SB_OK);
        REQUIRE(h.start() == SB_OK);
        CHECK(h.deliver(record("rec-1")) == SB_PENDING);
        CHECK(h.completions().at(0).receipt == "CR-TLS");
    }
    SECTION("accepted with tls_verify = false, with a warning") {
        Harness h(plugin());
        base_config(h, sys);
        h.unset("allow_http");
        h.config("tls_verify", "false");
        REQUIRE(h.create() == SB_OK);
        REQUIRE(h.start() == SB_OK);
        CHECK(h.logged("tls_verify = false"));
        CHECK(h.deliver(record("rec-1")) == SB_PENDING);
    }
    SECTION("a ca_file that is not a certificate is a config error") {
        Harness h(plugin());
        base_config(h, sys);
        h.config("ca_file", toml_string(cert.key.string() + ".missing"));
        CHECK(h.create() != SB_OK);
        CHECK(h.last_error().find("ca_file") != std::string::npos);
    }
}

TEST_CASE("http: config mistakes are refused naming the key") {
    FakeCaseSystem sys;
    auto refused = [&](auto&& tweak, const std::string& key) {
        Harness h(plugin());
        base_config(h, sys);
        tweak(h);
        CHECK(h.create() != SB_OK);
        INFO(h.last_error());
        CHECK(h.last_error().find(key) != std::string::npos);
    };
    refused([](Harness& h) { h.unset("allow_http"); }, "'url': plaintext http:// needs allow_http");
    refused([](Harness& h) { h.config("url", "\"ftp://x/\""); }, "'url'");
    refused([](Harness& h) { h.unset("bearer_token"); }, "'bearer_token'");
    refused([](Harness& h) { h.config("auth", "\"hmac\""); }, "'hmac_key'");
    refused([&](Harness& h) { h.config("erase_url", toml_string(sys.url("/cases/{id}"))); }, "'erase_url'");
    refused([&](Harness& h) {
        h.unset("case_reference_field");
        h.config("erase_url", toml_string(sys.url("/cases/{case_reference}")));
    }, "'case_reference_field'");
    refused([](Harness& h) { h.config("signature_header", "\"X Bad\""); }, "'signature_header'");
    // A literal secret is refused by the host's own validation.
    Harness literal(plugin());
    base_config(literal, sys);
    literal.config("bearer_token", "\"plain-text-token\"");
    CHECK_THROWS(literal.create());
}

TEST_CASE("http: erase unsupported without erase_url; with it, DELETE by case reference") {
    FakeCaseSystem sys;
    SECTION("no erase_url") {
        Harness h(plugin());
        base_config(h, sys);
        REQUIRE(h.create() == SB_OK);
        REQUIRE(h.start() == SB_OK);
        CHECK(h.erase("rec-1") == SB_ERR_UNSUPPORTED);
        CHECK(h.last_error().find("own retention rule") != std::string::npos);
        CHECK(sys.count() == 0);
    }
    SECTION("erase_url with {case_reference}") {
        sys.fallback({201, "{\"reference\":\"CR/77\"}"});
        Harness h(plugin());
        base_config(h, sys);
        h.config("erase_url", toml_string(sys.url("/cases/{case_reference}?source={record_id}")));
        REQUIRE(h.create() == SB_OK);
        REQUIRE(h.start() == SB_OK);
        REQUIRE(h.deliver(record("rec-1")) == SB_PENDING);
        CHECK(h.state().at("ref:rec-1") == "CR/77");
        sys.script({{204, "", ""}});
        CHECK(h.erase("rec-1") == SB_OK);
        auto s = sys.seen().back();
        CHECK(s.method == "DELETE");
        CHECK(s.uri == "/cases/CR%2F77?source=rec-1");
        CHECK(s.header("authorization") == std::string("Bearer ") + kToken);
        CHECK(s.body == "{\"record_id\":\"rec-1\",\"reason\":\"retention\"}");
        CHECK(h.state().count("ref:rec-1") == 0);
        // Nothing stored any more: nothing to erase, no request.
        std::size_t before = sys.count();
        CHECK(h.erase("rec-1") == SB_ERR_NOT_FOUND);
        CHECK(sys.count() == before);
    }
    SECTION("erase_url by record id: 404 is not found, 503 transient") {
        Harness h(plugin());
        base_config(h, sys);
        h.config("erase_url", toml_string(sys.url("/cases/by-record/{record_id}")))
            .config("erase_method", "\"POST\"");
        REQUIRE(h.create() == SB_OK);
        REQUIRE(h.start() == SB_OK);
        sys.script({{503, "{}"}, {404, "{}"}, {200, "{}"}});
        CHECK(h.erase("rec-2", {}, SB_ERASE_REQUEST) == SB_ERR_TRANSIENT);
        CHECK(h.erase("rec-2", {}, SB_ERASE_REQUEST) == SB_ERR_NOT_FOUND);
        CHECK(h.erase("rec-2", {}, SB_ERASE_REQUEST) == SB_OK);
        auto s = sys.seen().back();
        CHECK(s.method == "POST");
        CHECK(s.uri == "/cases/by-record/rec-2");
        CHECK(s.body == "{\"record_id\":\"rec-2\",\"reason\":\"request\"}");
    }
}
