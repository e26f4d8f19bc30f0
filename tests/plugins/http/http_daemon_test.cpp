// The http destination end to end: the real daemon (`switchboard run`) as a
// subprocess, a memory-source making three records, routed through a
// profile to an http destination that POSTs to a case system run by this
// test on 127.0.0.1. Record 1 is taken (201 with a case reference), record 2
// refused (400: dead letter), record 3 answered 503 first and taken on the
// retry with the same Idempotency-Key.
#include "fake_case_system.hpp"
#include "process.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using casesys::Answer;
using casesys::FakeCaseSystem;
using casesys::Seen;
using sbtest::Process;
using sbtest::TempDir;
namespace fs = std::filesystem;

namespace {

using sbtest::wait_until;
using sbtest::audit_lines;

// The memory-source record number (ref.sequence) in a delivered body.
int record_number(const Seen& s) {
    std::smatch m;
    if (std::regex_search(s.body, m, std::regex("\"ref\":\\{\"sequence\":([0-9]+)\\}"))) return std::stoi(m[1]);
    return 0;
}

std::string record_id(const Seen& s) {
    std::smatch m;
    if (std::regex_search(s.body, m, std::regex("^\\{\"record_id\":\"([^\"]+)\""))) return m[1];
    return "";
}

} // namespace

TEST_CASE("http end to end: delivered with a case reference, 400 dead-lettered, 503 retried and "
          "delivered once") {
    FakeCaseSystem sys;
    std::mutex m;
    int tries3 = 0;
    sys.responder([&](const Seen& s) {
        int n = record_number(s);
        if (n == 2) return Answer(400, "{\"error\":\"unknown service\"}");
        if (n == 3) {
            std::lock_guard lock(m);
            if (++tries3 == 1) return Answer(503, "{\"error\":\"busy\"}");
        }
        return Answer(201, "{\"reference\":\"CR-" + std::to_string(n) + "\"}");
    });

    TempDir dir;
    auto config = dir.write("http.toml", R"(
[node]
data_dir = "data"
[sources.mem]
plugin = "memory-source"
poll_interval = "50ms"
[sources.mem.config]
count = 3
interval = "50ms"
[destinations.case]
plugin = "http"
log_level = "debug"
max_attempts = 5
backoff = "100ms"
backoff_max = "500ms"
[destinations.case.config]
url = "http://127.0.0.1:)" + std::to_string(sys.port()) + R"(/cases"
allow_http = true
auth = "bearer"
bearer_token = "env:HTTP_E2E_TOKEN"
case_reference_field = "reference"
timeout = "5s"
[[route]]
category = ["*", "unclassified"]
destination = "case"
purpose = "http end-to-end test"
profile = "case"
[profiles.case.fields]
"citizen.*" = "keep"
"content.*" = "keep"
"ref.*" = "keep"
)");
    const fs::path data = dir.path / "data";
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"},
                   {"HTTP_E2E_TOKEN=e2e-token-NOT-REAL"});
    REQUIRE(daemon.wait_for_log("core: ready", 20s));
    auto done = [&] {
        auto lines = audit_lines(data);
        int delivered = 0, dead = 0;
        for (const auto& l : lines) {
            if (l.find("destination=case") == std::string::npos) continue;
            delivered += l.find("\tdeliver\t") != std::string::npos;
            dead += l.find("\tdead_letter\t") != std::string::npos;
        }
        return delivered >= 2 && dead >= 1;
    };
    bool finished = wait_until(done, 30s);
    auto referenced = daemon.wait_for_log("plugin\\[case\\]: seq [0-9]+ record \\S+ delivered \\(HTTP 201\\), case "
                                          "reference CR-3",
                                          10s);
    daemon.signal(SIGTERM);
    CHECK(daemon.wait(20s) == 0);
    INFO(daemon.err());
    REQUIRE(finished);
    CHECK(referenced);

    // What the case system saw: 1 once, 2 once (refused), 3 twice with the
    // same Idempotency-Key and body.
    std::map<int, std::vector<Seen>> by_number;
    for (const auto& s : sys.seen()) by_number[record_number(s)].push_back(s);
    REQUIRE(by_number.size() == 3);
    CHECK(by_number[1].size() == 1);
    CHECK(by_number[2].size() == 1);
    REQUIRE(by_number[3].size() == 2);
    CHECK(by_number[3][0].header("idempotency-key") == by_number[3][1].header("idempotency-key"));
    CHECK(by_number[3][0].header("idempotency-key") == record_id(by_number[3][0]));
    CHECK(by_number[3][0].body == by_number[3][1].body);
    for (const auto& [n, list] : by_number)
        for (const auto& s : list) CHECK(s.header("authorization") == "Bearer e2e-token-NOT-REAL");
    // The profile let citizen.name through; nothing else outside it.
    CHECK(by_number[1][0].body.find("\"name\":\"Test Person 1\"") != std::string::npos);

    // The audit: record 2 dead-lettered, 1 and 3 delivered, each with the
    // case reference the case system gave it as the delivery's receipt.
    std::string id2 = record_id(by_number[2][0]);
    std::string id1 = record_id(by_number[1][0]);
    std::string id3 = record_id(by_number[3][0]);
    bool dead2 = false, delivered1 = false, delivered3 = false;
    for (const auto& l : audit_lines(data)) {
        if (l.find("destination=case") == std::string::npos) continue;
        if (l.find("\tdead_letter\t" + id2 + "\t") != std::string::npos) dead2 = true;
        if (l.find("\tdeliver\t" + id1 + "\t") != std::string::npos) {
            delivered1 = true;
            CHECK(l.find(";receipt=CR-1\t") != std::string::npos);
        }
        if (l.find("\tdeliver\t" + id3 + "\t") != std::string::npos) {
            delivered3 = true;
            CHECK(l.find(";attempt=2;receipt=CR-3\t") != std::string::npos);
        }
    }
    CHECK(dead2);
    CHECK(delivered1);
    CHECK(delivered3);
    CHECK(daemon.err().find("HTTP 400") != std::string::npos);
    CHECK(daemon.err().find("HTTP 503") != std::string::npos);
    // No payload and no secret in the daemon's log.
    CHECK(daemon.err().find("Test Person") == std::string::npos);
    CHECK(daemon.err().find("person-") == std::string::npos);
    CHECK(daemon.err().find("e2e-token-NOT-REAL") == std::string::npos);
}
