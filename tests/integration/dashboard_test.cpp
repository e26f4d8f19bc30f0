// The dashboard as an operator sees it: the real daemon as a subprocess with a small config
// (a jsonl source, two jsonl-file departments with different profiles), records flowing,
// the page rendered by headless chromium (DOM after its script ran, and a screenshot), and
// /dashboard/data.json read directly. CI installs chromium through scripts/install-deps; a
// machine without it fails this test, saying so.

#include "http/access.hpp"
#include "process.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>

#include <catch2/catch.hpp>

#include <signal.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>

using namespace std::chrono_literals;
using sbtest::Process;
using sbtest::TempDir;

namespace {

// Two departments with different profiles, and one that never acknowledges.
const char* kConfig = R"TOML(
[node]
name = "dash-test"
data_dir = "data"
[sources.src]
plugin = "jsonl-source"
poll_interval = "20ms"
[sources.src.config]
path = "in"
format = "flat"
categories = ["topic=reference.internal", "citizen.name=identity.name", "citizen.postcode=contact.address",
              "account=identifier.account", "note=content.free_text"]
[destinations.revenues]
plugin = "jsonl-file"
[destinations.revenues.config]
dir = "out/revenues"
[destinations.waste]
plugin = "jsonl-file"
[destinations.waste.config]
dir = "out/waste"
[[classify.rule]]
category = "council_tax"
field = "topic"
equals = "ctax"
[[classify.rule]]
category = "missed_bin"
field = "topic"
equals = "bins"
[[route]]
name = "council-tax"
category = "council_tax"
destination = "revenues"
purpose = "council tax account queries"
profile = "revenues"
[[route]]
name = "missed-bins"
category = "missed_bin"
destination = "waste"
purpose = "missed bin collections"
profile = "waste"
# A department whose system is down: its outbox backs up.
[destinations.stuck]
plugin = "memory-sink"
[destinations.stuck.config]
mode = "transient"
[[route]]
name = "stuck-copy"
category = "council_tax"
destination = "stuck"
purpose = "case system (down)"
profile = "stuck"
[profiles.stuck.fields]
"topic" = "keep"
[profiles.revenues.fields]
"citizen.name" = "keep"
"account" = "mask:2"
[profiles.waste.fields]
"citizen.postcode" = "generalise:postcode"
"topic" = "keep"
)TOML";

// Personal data in the input: none of it may appear on the dashboard.
const char* const kPersonal[] = {"Ann Example", "Bob Example", "SW1A 1AA", "LS1 4AP", "12345678",
                                 "call me on"};

struct Http {
    int status;
    std::string content_type;
    std::string body;
};

Http get(int port, const std::string& path, const std::string& cookie = "") {
    Poco::Net::HTTPClientSession session("127.0.0.1", static_cast<Poco::UInt16>(port));
    session.setTimeout(Poco::Timespan(5, 0));
    Poco::Net::HTTPRequest req(Poco::Net::HTTPRequest::HTTP_GET, path, Poco::Net::HTTPMessage::HTTP_1_1);
    if (!cookie.empty()) req.set("Cookie", cookie);
    session.sendRequest(req);
    Poco::Net::HTTPResponse resp;
    std::istream& in = session.receiveResponse(resp);
    std::ostringstream body;
    body << in.rdbuf();
    return {static_cast<int>(resp.getStatus()), resp.getContentType(), body.str()};
}

Poco::JSON::Object::Ptr parse(const std::string& body) {
    return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

// A daemon on the config above, with `ctax` council-tax and `bins` missed-bin records
// delivered to both departments.
struct Node {
    TempDir dir{"sb-dash"};
    std::unique_ptr<Process> daemon;
    int port = 0;

    Node(int ctax, int bins) {
        std::filesystem::create_directories(dir.path / "in");
        std::filesystem::create_directories(dir.path / "out" / "revenues");
        std::filesystem::create_directories(dir.path / "out" / "waste");
        {
            std::ofstream out(dir.path / "in" / "a.jsonl");
            for (int i = 0; i < ctax; ++i)
                out << R"({"topic":"ctax","citizen":{"name":"Ann Example )" << i
                    << R"(","postcode":"SW1A 1AA"},"account":"12345678","note":"call me on 07700 900123"})" << "\n";
            for (int i = 0; i < bins; ++i)
                out << R"({"topic":"bins","citizen":{"name":"Bob Example )" << i
                    << R"(","postcode":"LS1 4AP"}})" << "\n";
        }
        auto config = dir.write("dash.toml", kConfig);
        daemon = std::make_unique<Process>(std::vector<std::string>{
            sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir", sbtest::plugin_dir(),
            "--set", "http.listen=127.0.0.1:0"});
        port = sbtest::ready_port(*daemon);
        // Records flowing: both departments have had theirs, and their
        // progress is committed (the journal writes it with a later commit,
        // or after a short delay: records_out counts before that).
        bool delivered = sbtest::wait_until([&] {
            auto d = parse(get(port, "/dashboard/data.json").body);
            auto dests = d->getArray("destinations");
            for (std::size_t i = 0; i < dests->size(); ++i) {
                auto o = dests->getObject(static_cast<unsigned>(i));
                if (o->getValue<std::string>("name") == "stuck") continue;
                int want = o->getValue<std::string>("name") == "revenues" ? ctax : bins;
                if (o->getValue<int>("records_out") < want || o->getValue<int>("acked_seq") < want) return false;
            }
            return true;
        });
        INFO(daemon->err());
        REQUIRE(delivered);
    }
    ~Node() {
        daemon->signal(SIGTERM);
        daemon->wait(20s);
    }
};

std::string chromium_binary() {
    if (const char* env = std::getenv("SB_CHROMIUM")) return std::filesystem::exists(env) ? env : "";
    for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
        if (std::filesystem::exists(p)) return p;
    return "";
}

// Headless chromium with a private profile; bounded.
sbtest::Result chromium(const std::filesystem::path& profile, std::vector<std::string> extra) {
    std::string bin = chromium_binary();
    if (bin.empty())
        FAIL("chromium is not installed (looked for /usr/bin/chromium, chromium-browser, google-chrome; or set "
             "SB_CHROMIUM): run scripts/install-deps, which installs Debian's chromium");
    std::vector<std::string> argv = {bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                     "--no-first-run", "--user-data-dir=" + profile.string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return sbtest::run(argv, 90s);
}

std::uint32_t be32(const std::string& s, std::size_t at) {
    return (std::uint32_t(std::uint8_t(s[at])) << 24) | (std::uint32_t(std::uint8_t(s[at + 1])) << 16) |
           (std::uint32_t(std::uint8_t(s[at + 2])) << 8) | std::uint32_t(std::uint8_t(s[at + 3]));
}

// The element of `array` whose "name" (or `key`) is `name`; fails the test if none.
Poco::JSON::Object::Ptr named(const Poco::JSON::Array::Ptr& array, const std::string& name,
                              const std::string& key = "name") {
    for (std::size_t i = 0; i < array->size(); ++i) {
        auto o = array->getObject(static_cast<unsigned>(i));
        if (o && o->getValue<std::string>(key) == name) return o;
    }
    FAIL("no element with " << key << " " << name);
    return nullptr;
}

} // namespace

TEST_CASE("/dashboard/data.json: flows from the routes and profiles, counters, backlog, erasure, expiries; "
          "no personal data") {
    Node node(3, 2);
    Http r = get(node.port, "/dashboard/data.json");
    REQUIRE(r.status == 200);
    CHECK(r.content_type == "application/json");
    auto d = parse(r.body);
    CHECK(d->getValue<std::string>("node") == "dash-test");

    auto sources = d->getArray("sources");
    REQUIRE(sources->size() == 1);
    CHECK(sources->getObject(0)->getValue<std::string>("name") == "src");
    CHECK(sources->getObject(0)->getValue<int>("records_in") == 5);

    auto dests = d->getArray("destinations");
    REQUIRE(dests->size() == 3);
    for (const auto& [name, n] : {std::pair{"revenues", 3}, std::pair{"waste", 2}}) {
        auto o = named(dests, name);
        INFO(name);
        CHECK(o->getValue<int>("records_out") == n);
        CHECK(o->getValue<int>("backlog") == 0);
        CHECK(o->getValue<int>("acked_seq") == n);
        CHECK(o->isNull("oldest_unacked_at"));
        CHECK(o->getValue<int>("erase_tasks_overdue") == 0);
    }

    // Nothing acknowledged at the department that is down: its backlog and its oldest record.
    auto stuck = named(dests, "stuck");
    CHECK(stuck->getValue<int>("records_out") == 0);
    CHECK(stuck->getValue<int>("backlog") == 3);
    CHECK(stuck->getValue<int>("acked_seq") == 0);
    CHECK_FALSE(stuck->isNull("oldest_unacked_at"));
    CHECK(stuck->getValue<std::int64_t>("oldest_unacked_age_ms") >= 0);
    CHECK(stuck->getValue<std::int64_t>("oldest_unacked_age_ms") < 120'000);

    auto flows = d->getArray("flows");
    REQUIRE(flows->size() == 3);
    auto revenues = named(flows, "council-tax", "route"), waste = named(flows, "missed-bins", "route");
    CHECK(revenues->getValue<std::string>("destination") == "revenues");
    CHECK(revenues->getValue<std::string>("purpose") == "council tax account queries");
    CHECK(revenues->getArray("sources")->getElement<std::string>(0) == "src");
    CHECK(revenues->getArray("categories")->getElement<std::string>(0) == "council_tax");
    auto fields = revenues->getArray("fields");
    REQUIRE(fields->size() == 2);
    CHECK(fields->getObject(0)->getValue<std::string>("path") == "account");
    CHECK(fields->getObject(0)->getValue<std::string>("transform") == "mask:2");
    CHECK(fields->getObject(1)->getValue<std::string>("path") == "citizen.name");
    CHECK(waste->getValue<std::string>("destination") == "waste");
    CHECK(waste->getValue<std::string>("profile") == "waste");
    CHECK(waste->getArray("fields")->getObject(0)->getValue<std::string>("transform") == "generalise:postcode");

    auto erasure = d->getObject("erasure");
    CHECK(erasure->getValue<int>("outstanding") == 0);
    CHECK(erasure->getValue<int>("overdue") == 0);
    CHECK(erasure->getValue<std::int64_t>("receipt_deadline_ms") == 7LL * 86'400'000);

    // One commit, one chunk: five records expiring in 28 days.
    auto retention = d->getObject("retention");
    auto next = retention->getArray("next_expiries");
    REQUIRE(next->size() >= 1);
    std::int64_t records = 0;
    for (unsigned i = 0; i < next->size(); ++i) {
        auto ch = next->getObject(i);
        records += ch->getValue<std::int64_t>("records");
        CHECK(ch->getValue<std::int64_t>("in_ms") > 27LL * 86'400'000);
    }
    CHECK(records == 5);
    CHECK(retention->getValue<int>("expiring_within_24h") == 0);

    for (const char* p : kPersonal) {
        INFO(p);
        CHECK(r.body.find(p) == std::string::npos);
    }

    // The page: self-contained, the same data embedded, nothing personal either.
    Http page = get(node.port, "/dashboard");
    REQUIRE(page.status == 200);
    CHECK(page.content_type == "text/html; charset=utf-8");
    CHECK(page.body.find("<svg") != std::string::npos);
    CHECK(page.body.find("\"purpose\":\"missed bin collections\"") != std::string::npos);
    CHECK(page.body.find(" src=") == std::string::npos);   // no external script or image
    CHECK(page.body.find(" href=") == std::string::npos);  // no external stylesheet
    for (const char* p : kPersonal) {
        INFO(p);
        CHECK(page.body.find(p) == std::string::npos);
    }
    CHECK(get(node.port, "/dashboard/").status == 200);
    CHECK(get(node.port, "/dashboard/nothing-here").status == 404);
}

TEST_CASE("the dashboard renders in headless chromium: both flows with their fields, non-zero counters, "
          "a 1280x900 screenshot") {
    Node node(4, 3);
    const std::string url = "http://127.0.0.1:" + std::to_string(node.port) + "/dashboard";

    // The DOM after the page's script ran (and refreshed once from data.json).
    auto dom = chromium(node.dir.path / "chromium-dom",
                        {"--virtual-time-budget=6000", "--dump-dom", url});
    INFO(dom.err);
    REQUIRE(dom.code == 0);
    const std::string& html = dom.out;
    CHECK(html.find("data-rendered=\"") != std::string::npos);
    CHECK(html.find("<span id=\"status\" class=\"\">updated ") != std::string::npos); // not "stale"
    for (const char* dest : {"revenues", "waste"}) {
        INFO(dest);
        CHECK(html.find(std::string("data-flow-destination=\"") + dest + "\"") != std::string::npos);
        CHECK(html.find(std::string("data-edge=\"src-&gt;") + dest + "\"") != std::string::npos);
    }
    for (const char* path : {"citizen.name", "account", "citizen.postcode", "topic"}) {
        INFO(path);
        CHECK(html.find(std::string("data-path=\"") + path + "\"><tspan>" + path + "</tspan>") != std::string::npos);
    }
    CHECK(html.find("generalise:postcode") != std::string::npos);
    auto counter = [&](const std::string& instance, const std::string& metric) {
        std::smatch m;
        std::regex re("data-instance=\"" + instance + "\" data-metric=\"" + metric + "\">([0-9,]+)<");
        return std::regex_search(html, m, re) ? m[1].str() : std::string("(missing)");
    };
    CHECK(counter("src", "records_in") == "7");
    CHECK(counter("revenues", "records_out") == "4");
    CHECK(counter("waste", "records_out") == "3");
    CHECK(counter("waste", "backlog") == "0");
    for (const char* p : kPersonal) {
        INFO(p);
        CHECK(html.find(p) == std::string::npos);
    }

    // The screenshot, kept in the build's meson-logs for a person to look at.
    auto dir = std::filesystem::path(sbtest::build_root()) / "meson-logs";
    std::filesystem::create_directories(dir);
    auto shot = dir / "dashboard.png";
    std::filesystem::remove(shot);
    auto s = chromium(node.dir.path / "chromium-shot",
                      {"--virtual-time-budget=6000", "--window-size=1280,900", "--screenshot=" + shot.string(), url});
    INFO(s.err);
    REQUIRE(s.code == 0);
    REQUIRE(std::filesystem::exists(shot));
    std::ifstream in(shot, std::ios::binary);
    std::string png((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    REQUIRE(png.size() > 33);
    CHECK(png.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
    CHECK(png.substr(12, 4) == "IHDR");
    CHECK(be32(png, 16) == 1280);
    CHECK(be32(png, 20) == 900);
    CHECK(png.size() > 20000); // a rendered page, not a blank one
    std::cout << "dashboard screenshot: " << shot.string() << "\n";
}

TEST_CASE("dashboard access: loopback only without admin tokens; with tokens, a bearer token or the cookie") {
    using switchboard::http::Access;
    using switchboard::http::AccessPolicy;
    using switchboard::http::check_access;
    switchboard::http::Request local, remote, remote6, local6;
    local.remote = "127.0.0.1:40000";
    local6.remote = "[::1]:40000";
    remote.remote = "192.0.2.7:40000";
    remote6.remote = "[2001:db8::1]:40000";
    AccessPolicy none;
    CHECK(check_access(none, local) == Access::Allowed);
    CHECK(check_access(none, local6) == Access::Allowed);
    CHECK(check_access(none, remote) == Access::NotLoopback);
    CHECK(check_access(none, remote6) == Access::NotLoopback);
    switchboard::http::Request mapped;
    mapped.remote = "[::ffff:127.0.0.1]:1";
    CHECK(check_access(none, mapped) == Access::Allowed);

    AccessPolicy tokens{{"s3cret-token-value-1"}};
    CHECK(check_access(tokens, local) == Access::NoToken); // a token is needed from anywhere
    auto with = [](switchboard::http::Request r, const char* name, const char* value) {
        r.headers.emplace_back(name, value);
        return r;
    };
    CHECK(check_access(tokens, with(remote, "authorization", "Bearer s3cret-token-value-1")) == Access::Allowed);
    CHECK(check_access(tokens, with(remote, "authorization", "bearer  s3cret-token-value-1 ")) == Access::Allowed);
    CHECK(check_access(tokens, with(remote, "cookie", "theme=dark; switchboard_admin=s3cret-token-value-1")) ==
          Access::Allowed);
    CHECK(check_access(tokens, with(remote, "authorization", "Bearer s3cret-token-value-2")) == Access::WrongToken);
    CHECK(check_access(tokens, with(remote, "authorization", "Basic czNjcmV0")) == Access::NoToken);
    CHECK(check_access(tokens, with(remote, "cookie", "switchboard_admin=")) == Access::NoToken);

    switchboard::http::Response resp;
    CHECK_FALSE(switchboard::http::require_access(none, remote, resp));
    CHECK(resp.status == 403);
    CHECK(resp.body.find("loopback") != std::string::npos);
    switchboard::http::Response resp2;
    CHECK_FALSE(switchboard::http::require_access(tokens, with(remote, "authorization", "Bearer nope"), resp2));
    CHECK(resp2.status == 401);
    CHECK(resp2.body.find("nope") == std::string::npos);
}
