// The admin API and /metrics on a running daemon (a real subprocess, real HTTP
// on loopback): tokens, the audit trail of every call, dead letters listed and
// retried, Prometheus text that a strict parser accepts and whose counters
// move, TLS required beyond loopback.

#include "http_call.hpp"
#include "process.hpp"

#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

using namespace std::chrono_literals;
using sbtest::Process;
using sbtest::TempDir;

namespace {

const std::string kDpoToken = "dpo-token-0123456789abcdef";
const std::string kScrapeToken = "scrape-token-fedcba9876543210";

using sbtest::Http;

Http call(int port, const std::string& method, const std::string& path, const std::string& token = "",
          const std::string& body = "") {
    return sbtest::http_call(port, method, path, token, body, 10);
}

// A strict reader of the Prometheus text format 0.0.4: every line is a
// comment (# HELP / # TYPE), or a sample of the family typed last; names and
// label names well formed, label values with only \\ \" \n escapes, no
// series twice, a family typed once, values that parse, counters >= 0.
// Returns "name{a="x",b="y"}" (labels sorted) -> value; FAILs otherwise.
std::map<std::string, double> parse_prometheus(const std::string& text) {
    static const std::regex name_re("[a-zA-Z_:][a-zA-Z0-9_:]*");
    static const std::regex label_re("[a-zA-Z_][a-zA-Z0-9_]*");
    std::map<std::string, double> out;
    std::map<std::string, std::string> types;
    std::set<std::string> helped;
    std::string current;
    REQUIRE(!text.empty());
    REQUIRE(text.back() == '\n');
    std::istringstream in(text);
    std::size_t n = 0;
    for (std::string line; std::getline(in, line);) {
        ++n;
        INFO("line " << n << ": " << line);
        REQUIRE(!line.empty());
        if (line[0] == '#') {
            std::istringstream parts(line);
            std::string hash, what, name;
            parts >> hash >> what >> name;
            REQUIRE(hash == "#");
            REQUIRE((what == "HELP" || what == "TYPE"));
            REQUIRE(std::regex_match(name, name_re));
            std::string rest;
            std::getline(parts, rest);
            if (what == "HELP") {
                REQUIRE(helped.insert(name).second);
                for (std::size_t i = 0; i < rest.size(); ++i)
                    if (rest[i] == '\\') REQUIRE((i + 1 < rest.size() && (rest[i + 1] == '\\' || rest[i + 1] == 'n')));
            } else {
                REQUIRE(!types.count(name));
                rest = rest.substr(rest.find_first_not_of(' '));
                REQUIRE((rest == "counter" || rest == "gauge" || rest == "untyped" || rest == "summary" ||
                         rest == "histogram"));
                types[name] = rest;
                current = name;
            }
            continue;
        }
        std::size_t i = 0;
        while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
        std::string name = line.substr(0, i);
        REQUIRE(std::regex_match(name, name_re));
        REQUIRE(name == current); // samples follow their TYPE line
        std::vector<std::pair<std::string, std::string>> labels;
        if (i < line.size() && line[i] == '{') {
            ++i;
            while (i < line.size() && line[i] != '}') {
                std::size_t eq = line.find('=', i);
                REQUIRE(eq != std::string::npos);
                std::string key = line.substr(i, eq - i);
                REQUIRE(std::regex_match(key, label_re));
                REQUIRE(eq + 1 < line.size());
                REQUIRE(line[eq + 1] == '"');
                std::string value;
                std::size_t j = eq + 2;
                for (;; ++j) {
                    REQUIRE(j < line.size());
                    if (line[j] == '"') break;
                    if (line[j] == '\\') {
                        REQUIRE(j + 1 < line.size());
                        char e = line[++j];
                        REQUIRE((e == '\\' || e == '"' || e == 'n'));
                        value.push_back(e == 'n' ? '\n' : e);
                    } else {
                        value.push_back(line[j]);
                    }
                }
                labels.emplace_back(key, value);
                i = j + 1;
                if (i < line.size() && line[i] == ',') ++i;
            }
            REQUIRE(i < line.size());
            ++i; // '}'
        }
        REQUIRE(i < line.size());
        REQUIRE(line[i] == ' ');
        std::string value_text = line.substr(i + 1);
        double value = 0;
        if (value_text == "NaN") value = std::nan("");
        else if (value_text == "+Inf") value = INFINITY;
        else if (value_text == "-Inf") value = -INFINITY;
        else {
            std::size_t used = 0;
            REQUIRE_NOTHROW(value = std::stod(value_text, &used));
            REQUIRE(used == value_text.size());
        }
        if (types[name] == "counter") REQUIRE(value >= 0);
        std::sort(labels.begin(), labels.end());
        std::string key = name + "{";
        for (std::size_t k = 0; k < labels.size(); ++k)
            key += (k ? "," : "") + labels[k].first + "=\"" + labels[k].second + "\"";
        key += "}";
        REQUIRE(out.emplace(key, value).second);
    }
    // Every family typed has a HELP too.
    for (const auto& [name, type] : types) CHECK(helped.count(name));
    return out;
}

std::filesystem::path write_config(const TempDir& dir, const std::string& extra = "") {
    std::filesystem::create_directories(dir.path / "in");
    auto token_file = dir.write("scrape.token", kScrapeToken + "\n");
    ::chmod(token_file.c_str(), 0600);
    return dir.write("admin.toml", R"(
[node]
data_dir = "data"
[sources.stream]
plugin = "jsonl-source"
poll_interval = "20ms"
[sources.stream.config]
path = "in"
format = "flat"
categories = ["marker=reference.internal"]
[destinations.good]
plugin = "memory-sink"
[destinations.good.config]
output = "good.jsonl"
[destinations.bad]
plugin = "memory-sink"
max_attempts = 1
[destinations.bad.config]
mode = "permanent"
[[route]]
category = "unclassified"
destination = "good"
purpose = "admin test"
profile = "p"
[[route]]
category = "unclassified"
destination = "bad"
purpose = "admin test"
profile = "p"
[profiles.p.fields]
"marker" = "keep"
[[admin.token]]
name = "dpo"
token = "env:SB_TEST_ADMIN_DPO"
[[admin.token]]
name = "prometheus"
token = "file:scrape.token"
read_only = true
)" + extra);
}

std::unique_ptr<Process> start(const std::filesystem::path& config, std::vector<std::string> extra = {},
                               std::string dpo_token = kDpoToken) {
    std::vector<std::string> argv = {sbtest::switchboard_binary(), "run", "-c", config.string(),
                                     "--plugin-dir", sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(argv, std::vector<std::string>{"SB_TEST_ADMIN_DPO=" + dpo_token});
}



} // namespace

TEST_CASE("admin API: tokens, audited calls, dead letters retried; /metrics parses and moves") {
    TempDir dir;
    auto config = write_config(dir);
    auto daemon = start(config);
    int port = sbtest::ready_port(*daemon, "https?");

    // /metrics needs a token (admin.metrics_auth defaults to true); the
    // read-only scrape token suffices.
    CHECK(call(port, "GET", "/metrics").status == 401);
    Http scrape = call(port, "GET", "/metrics", kScrapeToken);
    REQUIRE(scrape.status == 200);
    CHECK(scrape.content_type.find("text/plain; version=0.0.4") == 0);
    auto before = parse_prometheus(scrape.body);
    // With admin tokens configured the dashboard asks for one too.
    CHECK(call(port, "GET", "/dashboard/data.json").status == 401);
    CHECK(call(port, "GET", "/dashboard/data.json", "not-a-token-of-this-node").status == 401);
    CHECK(call(port, "GET", "/dashboard/data.json", kScrapeToken).status == 200);
    const std::string in_stream = R"(switchboard_records_in_total{instance="stream",kind="source",plugin="jsonl-source"})";
    const std::string out_good = R"(switchboard_records_out_total{instance="good",kind="destination",plugin="memory-sink"})";
    const std::string dead_bad = R"(switchboard_records_dead_lettered_total{instance="bad",kind="destination",plugin="memory-sink"})";
    REQUIRE(before.count(in_stream));
    CHECK(before[in_stream] == 0);
    CHECK(before.count(R"(switchboard_outbox_depth{destination="good"})"));
    CHECK(before.count(R"(switchboard_outbox_oldest_unacknowledged_age_seconds{destination="bad"})"));
    CHECK(before.count("switchboard_retention_lag_seconds{}"));
    CHECK(before.count("switchboard_retention_sweep_duration_seconds{}"));
    CHECK(before.count(R"(switchboard_erase_tasks_overdue{instance="good",kind="destination",plugin="memory-sink"})"));
    CHECK(before.count(R"(switchboard_erase_tasks_pending{instance="stream",kind="source",plugin="jsonl-source"})"));
    CHECK(before["switchboard_ready{}"] == 1);

    // Five records: delivered to good, dead-lettered at bad.
    {
        std::ofstream out(dir.path / "in" / "part-1.jsonl");
        for (int i = 0; i < 5; ++i) out << "{\"marker\":\"m-" << i << "\"}\n";
    }
    auto dead_letters = [&] { return call(port, "GET", "/admin/v1/deadletters?destination=bad", kDpoToken); };
    REQUIRE(sbtest::wait_until([&] {
        daemon->pump(0);
        return sbtest::count_lines(dir.path / "good.jsonl") == 5 && sbtest::count_of(dead_letters().body, "\"id\":") == 5;
    }));
    auto after = parse_prometheus(call(port, "GET", "/metrics", kScrapeToken).body);
    CHECK(after[in_stream] == 5);
    CHECK(after[out_good] == 5);
    CHECK(after[dead_bad] == 5);
    CHECK(after[R"(switchboard_dead_letters{destination="bad"})"] == 5);
    CHECK(after["switchboard_audit_entries_total{}"] > before["switchboard_audit_entries_total{}"]);

    // Without a token, with a wrong one, and with a read-only one for a change.
    Http none = call(port, "GET", "/admin/v1/health");
    CHECK(none.status == 401);
    CHECK(none.body.find("admin token") != std::string::npos);
    CHECK(call(port, "GET", "/admin/v1/health", "not-the-token-at-all").status == 401);
    CHECK(call(port, "POST", "/admin/v1/deadletters/retry", kScrapeToken, "{\"all\":true}").status == 403);
    CHECK(call(port, "GET", "/admin/v1/no-such-thing", kDpoToken).status == 404);
    CHECK(call(port, "POST", "/admin/v1/health", kDpoToken).status == 405);

    Http health = call(port, "GET", "/admin/v1/health", kDpoToken);
    REQUIRE(health.status == 200);
    CHECK(health.body.find("\"status\":\"ready\"") != std::string::npos);
    CHECK(health.body.find(R"({"name":"bad","plugin":"memory-sink","kind":"destination")") != std::string::npos);
    CHECK(sbtest::count_of(health.body, "\"running\":true") == 3);

    Http outbox = call(port, "GET", "/admin/v1/outbox", kScrapeToken);
    REQUIRE(outbox.status == 200);
    CHECK(outbox.body.find(R"({"destination":"good","depth":0,)") != std::string::npos);
    CHECK(outbox.body.find(R"("dead_letters":5)") != std::string::npos);

    // Bad bodies get a clear 400.
    for (const char* body : {"not json", "{\"ids\":[]}", "{\"ids\":[\"x\"]}", "{\"every\":true}", "[1]"}) {
        Http bad = call(port, "POST", "/admin/v1/deadletters/retry", kDpoToken, body);
        INFO(body << " -> " << bad.body);
        CHECK(bad.status == 400);
        CHECK(bad.body.find("\"error\":") != std::string::npos);
    }
    CHECK(call(port, "POST", "/admin/v1/deadletters/retry", kDpoToken, "{\"ids\":[999999]}").status == 404);

    // Retry one by id: it is delivered again (to a destination that still
    // refuses it, so it comes back with a second attempt counted).
    std::smatch m;
    std::string listed = dead_letters().body;
    REQUIRE(std::regex_search(listed, m, std::regex("\"id\":([0-9]+)")));
    const std::string id = m[1];
    Http retry = call(port, "POST", "/admin/v1/deadletters/retry", kDpoToken, "{\"ids\":[" + id + "]}");
    CHECK(retry.status == 200);
    CHECK(retry.body == "{\"retry_requested\":[" + id + "],\"not_found\":[]}");
    CHECK(sbtest::wait_until([&] {
        daemon->pump(0);
        std::string b = dead_letters().body;
        return b.find("\"attempts\":2,") != std::string::npos &&
               b.find("\"retry_requested\":true") == std::string::npos;
    }));
    Http all = call(port, "POST", "/admin/v1/deadletters/retry", kDpoToken, "{\"all\":true,\"destination\":\"bad\"}");
    CHECK(all.status == 200);
    CHECK(sbtest::count_of(all.body, ",") >= 5);

    Http verify = call(port, "GET", "/admin/v1/audit/verify", kDpoToken);
    INFO(verify.body);
    CHECK(verify.status == 200);
    CHECK(verify.body.find("\"ok\":true") != std::string::npos);

    daemon->signal(SIGTERM);
    REQUIRE(daemon->wait(20s) == 0);

    // Each call is in the trail, with the token's name (or "-"), and no token
    // appears anywhere in it.
    auto lines = sbtest::audit_lines(dir.path / "data");
    std::string trail;
    for (const auto& l : lines) trail += l + "\n";
    CHECK(trail.find(kDpoToken) == std::string::npos);
    CHECK(trail.find(kScrapeToken) == std::string::npos);
    CHECK(trail.find("not-the-token-at-all") == std::string::npos);
    auto has = [&](const std::string& pattern) {
        return std::regex_search(trail, std::regex("\tadmin\t-\t" + pattern));
    };
    CHECK(has("actor=-;method=GET;endpoint=/admin/v1/health;status=401"));
    CHECK(has("actor=-;method=GET;endpoint=/metrics;status=401"));
    CHECK(has("actor=prometheus;method=POST;endpoint=/admin/v1/deadletters/retry;status=403"));
    CHECK(has("actor=dpo;method=GET;endpoint=/admin/v1/health;status=200"));
    CHECK(has("actor=dpo;method=POST;endpoint=/admin/v1/health;status=405"));
    CHECK(has("actor=dpo;method=GET;endpoint=/admin/v1;status=404"));
    CHECK(has("actor=dpo;method=POST;endpoint=/admin/v1/deadletters/retry;status=200"));
    CHECK(has("actor=dpo;method=POST;endpoint=/admin/v1/deadletters/retry;status=400"));
    CHECK(has("actor=dpo;method=GET;endpoint=/admin/v1/audit/verify;status=200"));
    CHECK(has("actor=prometheus;method=GET;endpoint=/admin/v1/outbox;status=200"));
    // The query string of a call is not kept.
    for (const auto& l : lines)
        if (l.find("\tadmin\t") != std::string::npos) CHECK(l.find("?destination") == std::string::npos);
    // And the trail still verifies with the calls in it.
    auto check = sbtest::run({sbtest::switchboard_binary(), "audit", "verify", "-c", config.string()});
    INFO(check.out << check.err);
    CHECK(check.code == 0);
}

TEST_CASE("/metrics without a token when admin.metrics_auth = false; the admin API still needs one") {
    TempDir dir;
    auto daemon = start(write_config(dir, "[admin]\nmetrics_auth = false\n"));
    int port = sbtest::ready_port(*daemon, "https?");
    Http scrape = call(port, "GET", "/metrics");
    CHECK(scrape.status == 200);
    parse_prometheus(scrape.body);
    CHECK(call(port, "GET", "/admin/v1/outbox").status == 401);
    daemon->signal(SIGTERM);
    CHECK(daemon->wait(20s) == 0);
}

TEST_CASE("the daemon refuses to start: beyond loopback without TLS, a short admin token") {
    TempDir dir;
    auto config = write_config(dir);
    {
        auto r = sbtest::run({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                              sbtest::plugin_dir(), "--set", "http.listen=0.0.0.0:0", "--set",
                              "http.allow_remote=true"},
                             30s, {"SB_TEST_ADMIN_DPO=" + kDpoToken});
        INFO(r.err);
        CHECK(r.code != 0);
        CHECK(r.err.find("http.listen: listens beyond this machine without TLS; set http.tls_cert and "
                         "http.tls_key") != std::string::npos);
        CHECK_FALSE(std::filesystem::exists(dir.path / "data" / "journal.db"));
    }
    {
        auto r = sbtest::run({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                              sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"},
                             30s, {"SB_TEST_ADMIN_DPO=short"});
        INFO(r.err);
        CHECK(r.code != 0);
        CHECK(r.err.find("admin token 'dpo' is shorter than 16 characters") != std::string::npos);
        CHECK(r.err.find("short") == r.err.find("shorter")); // the token itself is not printed
    }
}

TEST_CASE("with http.tls_cert and tls_key the listener serves HTTPS, also beyond loopback") {
    TempDir dir;
    auto r = sbtest::run({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                          "-keyout", (dir.path / "key.pem").string(), "-out", (dir.path / "cert.pem").string()});
    INFO(r.err);
    REQUIRE(r.code == 0);
    auto config = write_config(dir, "[http]\nallow_remote = true\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n");
    auto daemon = start(config, {"--set", "http.listen=0.0.0.0:0"});
    auto m = daemon->wait_for_log(R"(INFO  core: ready: .* http https://0\.0\.0\.0:([0-9]+))", 20s);
    INFO(daemon->err());
    REQUIRE(m);
    int port = std::stoi((*m)[1]);
    Poco::Net::Context::Ptr context =
        new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, "", "", "", Poco::Net::Context::VERIFY_NONE);
    Poco::Net::HTTPSClientSession session("127.0.0.1", static_cast<Poco::UInt16>(port), context);
    session.setTimeout(Poco::Timespan(10, 0));
    Poco::Net::HTTPRequest req("GET", "/admin/v1/health", Poco::Net::HTTPMessage::HTTP_1_1);
    req.set("Authorization", "Bearer " + kDpoToken);
    session.sendRequest(req);
    Poco::Net::HTTPResponse resp;
    std::ostringstream body;
    body << session.receiveResponse(resp).rdbuf();
    CHECK(resp.getStatus() == 200);
    CHECK(body.str().find("\"status\":\"ready\"") != std::string::npos);
    // Plain HTTP on the TLS port gets nothing useful.
    CHECK_THROWS(call(port, "GET", "/healthz"));
    daemon->signal(SIGTERM);
    CHECK(daemon->wait(20s) == 0);
}
