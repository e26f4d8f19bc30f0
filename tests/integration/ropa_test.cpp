// `switchboard ropa`: the record of processing generated from the default
// config (every route, purpose, lawful basis, recipient and field), HTML that
// is well-formed and escapes hostile text, --diff naming exactly what a
// change alters, and a bad config answered as `check` answers it. The real
// binary and plugins, real files.

#include "process.hpp"

#include <Poco/AutoPtr.h>
#include <Poco/DOM/AutoPtr.h>
#include <Poco/DOM/DOMParser.h>
#include <Poco/DOM/Document.h>
#include <Poco/DOM/NodeList.h>
#include <Poco/SAX/InputSource.h>

#include <catch2/catch.hpp>

#include <toml++/toml.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using sbtest::TempDir;

namespace {

std::string default_config() { return sbtest::source_root() + "/configs/default.toml"; }


// The default config's feed keys, made with `switchboard keygen` under
// `dir`, and the --set arguments pointing the feeds (and the data and review
// directories) there: the test stays out of the source tree.
std::vector<std::string> default_overrides(const std::filesystem::path& dir) {
    std::filesystem::create_directories(dir / "keys");
    for (const char* name : {"switchboard", "revenues", "waste", "housing"}) {
        auto r = sbtest::run({sbtest::switchboard_binary(), "keygen", name, "--dir", (dir / "keys").string()}, 20s);
        INFO(r.err);
        REQUIRE(r.code == 0);
    }
    std::vector<std::string> args = {"--plugin-dir", sbtest::plugin_dir(),
                                     "--set", "node.data_dir=" + (dir / "data").string(),
                                     "--set", "destinations.review.config.dir=" + (dir / "review").string()};
    int port = 5601;
    for (const char* dest : {"revenues", "waste", "housing"}) {
        const std::string at = std::string("destinations.") + dest + ".config.";
        args.insert(args.end(), {"--set", at + "endpoint=tcp://127.0.0.1:" + std::to_string(port++),
                                 "--set", at + "server_secret_key=file:" + (dir / "keys" / "switchboard.key").string(),
                                 "--set", at + "client_key_files=[\"" + (dir / "keys" / dest).string() + ".pub\"]"});
    }
    return args;
}

sbtest::Result ropa(std::vector<std::string> args) {
    std::vector<std::string> argv = {sbtest::switchboard_binary(), "ropa"};
    argv.insert(argv.end(), args.begin(), args.end());
    return sbtest::run(argv, 60s, {"LANDBOT_HOOK_TOKEN=test-hook-token"});
}

// The lines of `md` between the heading `start` and the next heading of the
// same or a higher level.
std::string section(const std::string& md, const std::string& start) {
    auto at = md.find("\n" + start + "\n");
    REQUIRE(at != std::string::npos);
    auto level = start.substr(0, start.find(' ') + 1);
    auto end = md.find("\n" + level, at + 1);
    auto end2 = level.size() > 3 ? md.find("\n## ", at + 1) : std::string::npos;
    return md.substr(at, std::min(end, end2) - at);
}

// The table row of `md` starting with "| first |".
std::string row(const std::string& md, const std::string& first) {
    auto at = md.find("\n| " + first + " |");
    if (at == std::string::npos) return {};
    return md.substr(at + 1, md.find('\n', at + 1) - at - 1);
}

// Parses the page as XML: a well-formed page parses; returns the number of
// `tag` elements.
unsigned long count_elements(const std::string& html, const std::string& tag) {
    std::string body = html.substr(html.find("<html"));
    Poco::XML::DOMParser parser;
    parser.setFeature(Poco::XML::XMLReader::FEATURE_NAMESPACES, false);
    Poco::AutoPtr<Poco::XML::Document> doc = parser.parseString(body);
    Poco::AutoPtr<Poco::XML::NodeList> list = doc->getElementsByTagName(tag);
    return list->length();
}

} // namespace

TEST_CASE("ropa of the default config lists every route with its purpose, lawful basis, recipient and fields") {
    TempDir dir;
    auto args = default_overrides(dir.path);
    args.insert(args.end(), {"-c", default_config(), "--out", (dir.path / "out").string()});
    auto r = ropa(args);
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("wrote " + (dir.path / "out" / "ropa.md").string()) != std::string::npos);
    const std::string md = sbtest::read_file(dir.path / "out" / "ropa.md");
    const std::string html = sbtest::read_file(dir.path / "out" / "ropa.html");
    INFO(md);

    auto config = toml::parse_file(default_config());
    const auto* routes = config["route"].as_array();
    REQUIRE(routes);
    REQUIRE(routes->size() == 4);
    const std::string purposes = section(md, "## 2. Purposes and lawful bases");
    for (const auto& node : *routes) {
        const auto& route = *node.as_table();
        const std::string name = route["name"].value_or(std::string());
        const std::string destination = route["destination"].value_or(std::string());
        const std::string profile = route["profile"].value_or(std::string());
        INFO("route " << name);
        const std::string line = row(purposes, name);
        REQUIRE_FALSE(line.empty());
        CHECK(line.find("| " + destination + " |") != std::string::npos);
        CHECK(line.find(route["purpose"].value_or(std::string())) != std::string::npos);
        if (auto basis = route["lawful_basis"].value<std::string>())
            CHECK(line.find(*basis) != std::string::npos);
        else
            CHECK(line.find("not stated") != std::string::npos);
        CHECK(line.find("| " + profile + " v1 |") != std::string::npos);

        // The recipient's section names every field of the route's profile,
        // with its transform and the route.
        const std::string recipient = section(md, "### " + destination + ": " +
                                                      config["destinations"][destination]["description"].value_or(std::string()));
        const auto* fields = config["profiles"][profile]["fields"].as_table();
        REQUIRE(fields);
        for (const auto& [path, transform] : *fields) {
            const std::string field_row = row(recipient, "`" + std::string(path.str()) + "`");
            INFO("field " << path.str());
            REQUIRE_FALSE(field_row.empty());
            CHECK(field_row.find("| " + *transform.value<std::string>()) != std::string::npos);
            CHECK(field_row.find("| " + name + " |") != std::string::npos);
        }
    }
    // The housing route's special category data, under its lawful basis.
    CHECK(row(section(md, "### housing: Housing repairs"), "`special.health`").find("special category") !=
          std::string::npos);

    // Sources: every one, with plugin, channel and data subjects.
    const std::string sources = section(md, "## 1. Source systems and the data they collect");
    for (const char* s : {"web-chat", "calls", "one-stop-shops", "email", "sample-import"})
        CHECK_FALSE(row(sources, s).empty());
    CHECK(row(sources, "calls").find("| phone |") != std::string::npos);
    CHECK(row(sources, "calls").find("residents and others contacting the council") != std::string::npos);
    CHECK(row(sources, "calls").find("council staff") != std::string::npos);
    // Retention, transfers, security.
    CHECK(row(section(md, "## 4. Retention"), "default (retention.default)").find("| 28d |") != std::string::npos);
    CHECK(section(md, "## 5. Transfers outside the UK").find("None") != std::string::npos);
    const std::string security = section(md, "## 6. Security measures in force");
    CHECK(row(security, "transport to revenues").find("CURVE-encrypted") != std::string::npos);
    CHECK(row(security, "transport to review").find("files under") != std::string::npos);
    CHECK(row(security, "HTTP listener (webhooks, health, admin)").find("loopback only") != std::string::npos);
    CHECK_FALSE(row(security, "payment card data").empty());
    CHECK_FALSE(row(security, "audit trail").empty());
    // No secret value: the key files' contents never appear.
    CHECK(md.find(sbtest::read_file(dir.path / "keys" / "switchboard.key").substr(0, 40)) == std::string::npos);

    // The HTML says the same and is well-formed, with no external asset.
    CHECK(count_elements(html, "table") >= 7);
    CHECK(html.find("src=") == std::string::npos);
    CHECK(html.find("href=") == std::string::npos);
    CHECK(html.find("<td>council-tax</td>") != std::string::npos);
    CHECK(html.find("<code>special.health</code>") != std::string::npos);
}

TEST_CASE("ropa escapes hostile names and descriptions; transfers abroad are listed") {
    TempDir dir;
    const std::string hostile = "<script>alert(1)</script> | *x* ]]> & \"q\" 'a'";
    auto config = dir.write(
        "hostile.toml",
        "[node]\nname = \"" + std::string("<script>alert(1)</script>") + "\"\ndata_dir = \"data\"\n"
        "[sources.web]\nplugin = \"memory-source\"\ndescription = '''" + hostile + "'''\n"
        "[destinations.sink]\nplugin = \"memory-sink\"\ndescription = '''" + hostile + "'''\n"
        "transfer_abroad = 'USA <b>IDTA</b>'\n"
        "[[route]]\nname = \"all\"\ncategory = \"*\"\ndestination = \"sink\"\npurpose = '''" + hostile + "'''\n"
        "profile = \"p\"\n[profiles.p]\ndescription = '''" + hostile + "'''\n[profiles.p.fields]\n\"citizen.name\" = \"keep\"\n");
    auto r = ropa({"-c", config.string(), "--plugin-dir", sbtest::plugin_dir(), "--out", (dir.path / "out").string()});
    INFO(r.err);
    REQUIRE(r.code == 0);
    const std::string html = sbtest::read_file(dir.path / "out" / "ropa.html");
    const std::string md = sbtest::read_file(dir.path / "out" / "ropa.md");
    CHECK(count_elements(html, "script") == 0);
    CHECK(count_elements(html, "b") == 0);
    CHECK(count_elements(html, "table") >= 7);
    CHECK(html.find("&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
    CHECK(html.find("USA &lt;b&gt;IDTA&lt;/b&gt;") != std::string::npos);
    // Markdown: no raw HTML, and a '|' cannot break a table row.
    CHECK(md.find("<script>") == std::string::npos);
    CHECK(md.find("<b>") == std::string::npos);
    const std::string line = row(md, "all");
    REQUIRE_FALSE(line.empty());
    CHECK(line.find("\\|") != std::string::npos);
    CHECK(row(section(md, "## 5. Transfers outside the UK"), "sink").find("USA &lt;b&gt;IDTA&lt;/b&gt;") !=
          std::string::npos);

    SECTION("--format md writes only the Markdown") {
        auto only = ropa({"-c", config.string(), "--plugin-dir", sbtest::plugin_dir(), "--out",
                          (dir.path / "md").string(), "--format", "md"});
        CHECK(only.code == 0);
        CHECK(std::filesystem::exists(dir.path / "md" / "ropa.md"));
        CHECK_FALSE(std::filesystem::exists(dir.path / "md" / "ropa.html"));
    }
}

TEST_CASE("ropa --diff names exactly the route added and the field removed") {
    TempDir dir;
    std::string text = sbtest::read_file(default_config());
    const std::string phone = "\"contact.phone\" = \"keep\"\n";
    const auto revenues = text.find("[profiles.revenues.fields]");
    REQUIRE(revenues != std::string::npos);
    const auto at = text.find(phone, revenues);
    REQUIRE(at != std::string::npos);
    text.erase(at, phone.size());
    text += "\n[[route]]\nname = \"repairs-review\"\ncategory = \"housing_repairs\"\ndestination = \"review\"\n"
            "purpose = \"check repairs by hand\"\nprofile = \"review\"\n";
    auto changed = dir.write("new.toml", text);

    auto args = default_overrides(dir.path);
    args.insert(args.end(), {"-c", changed.string(), "--diff", default_config(), "--out", (dir.path / "out").string()});
    auto r = ropa(args);
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("changes from " + default_config() +
                     ": 2 changes: 1 route added (repairs-review), 1 field removed (revenues: contact.phone)\n") !=
          std::string::npos);
    const std::string md = sbtest::read_file(dir.path / "out" / "ropa-diff.md");
    INFO(md);
    CHECK(row(md, "route added").find("| repairs-review | - | housing_repairs to review for \"check repairs by hand\"") !=
          std::string::npos);
    CHECK(row(md, "field removed").find("| revenues: contact.phone | keep | - |") != std::string::npos);
    CHECK(count_elements(sbtest::read_file(dir.path / "out" / "ropa-diff.html"), "tr") == 3);

    // The same config against itself: nothing to review.
    auto same = default_overrides(dir.path / "same");
    same.insert(same.end(), {"-c", default_config(), "--diff", default_config(), "--out", (dir.path / "same").string()});
    auto s = ropa(same);
    CHECK(s.code == 0);
    CHECK(s.out.find(": no change to who receives what\n") != std::string::npos);
}

TEST_CASE("ropa refuses a bad config with the same errors as check, and bad usage") {
    TempDir dir;
    auto config = dir.write("bad.toml", "[node]\ndata_dir = \"d\"\n[sources.web]\nplugin = "
                                        "\"memory-source\"\n[sources.web.config]\ncount = -1\n"
                                        "[destinations.sink]\nplugin = \"memory-sink\"\ntransfer_abroad = 3\n");
    auto check = sbtest::run({sbtest::switchboard_binary(), "check", "-c", config.string(), "--plugin-dir",
                              sbtest::plugin_dir()});
    auto r = ropa({"-c", config.string(), "--plugin-dir", sbtest::plugin_dir(), "--out", (dir.path / "out").string()});
    CHECK(check.code == 2);
    CHECK(r.code == 2);
    CHECK(r.err == check.err);
    CHECK(r.err.find(config.string() + ":6:9: sources.web.config.count: must be at least 0 (found -1)") !=
          std::string::npos);
    CHECK(r.err.find("destinations.sink.transfer_abroad") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir.path / "out"));

    // A bad OLD config for --diff is refused the same way.
    auto good = dir.write("good.toml", "[node]\ndata_dir = \"d\"\n");
    auto d = ropa({"-c", good.string(), "--diff", config.string(), "--plugin-dir", sbtest::plugin_dir(), "--out",
                   (dir.path / "out").string()});
    CHECK(d.code == 2);
    CHECK(d.err.find(config.string() + ": ") != std::string::npos);

    CHECK(ropa({"--bogus"}).code == 2);
    CHECK(ropa({"-c", good.string(), "--format", "pdf"}).code == 2);
    CHECK(ropa({"--out", "x"}).code == 2);
    auto help = ropa({"--help"});
    CHECK(help.code == 0);
    CHECK(help.out.find("--diff OLD.toml") != std::string::npos);
}
