// file-drop end to end: the real daemon (`switchboard run`) as a subprocess,
// a jsonl source reading a real file, classification, a route and a profile
// to a file-drop destination writing CSV into a real directory. The file
// appears with exactly the routed records and the profile's fields, then the
// retention clock erases the rows (receipts in the audit trail) and deletes
// the emptied file.
#include "process.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using sbtest::Process;
using sbtest::TempDir;
namespace fs = std::filesystem;

namespace {

using sbtest::wait_until;

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

using Table = std::vector<std::vector<std::string>>;

// Strict RFC 4180 (CRLF after every record); nullopt on any deviation.
std::optional<Table> parse_csv(std::string_view t) {
    Table rows;
    std::size_t i = 0;
    while (i < t.size()) {
        std::vector<std::string> row;
        for (;;) {
            std::string field;
            if (i < t.size() && t[i] == '"') {
                for (++i;; ++i) {
                    if (i >= t.size()) return std::nullopt;
                    if (t[i] == '"') {
                        if (i + 1 < t.size() && t[i + 1] == '"') {
                            field += '"';
                            ++i;
                            continue;
                        }
                        ++i;
                        break;
                    }
                    field += t[i];
                }
            } else {
                while (i < t.size() && t[i] != ',' && t[i] != '\r') {
                    if (t[i] == '"' || t[i] == '\n') return std::nullopt;
                    field += t[i++];
                }
            }
            row.push_back(field);
            if (i < t.size() && t[i] == ',') {
                ++i;
                continue;
            }
            if (t.substr(i, 2) != "\r\n") return std::nullopt;
            i += 2;
            break;
        }
        rows.push_back(std::move(row));
    }
    return rows;
}

// The drop directory's CSV files (the day is the daemon's UTC day, which a
// run across midnight could split: rows are gathered from all of them).
std::vector<fs::path> drop_files(const fs::path& dir) {
    std::vector<fs::path> out;
    std::error_code ec;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); ++it)
        if (it->path().filename().string()[0] != '.') out.push_back(it->path()); // temporaries
    return out;
}

Table rows(const fs::path& dir) {
    Table out;
    for (const auto& f : drop_files(dir)) {
        auto t = parse_csv(read_file(f));
        if (!t || t->empty()) continue;
        out.insert(out.end(), t->begin() + 1, t->end());
    }
    return out;
}


} // namespace

TEST_CASE("file-drop end to end: the day's CSV holds the routed, minimised records; the retention "
          "clock empties and deletes it") {
    TempDir dir("sb-file-drop-e2e");
    fs::create_directories(dir.path / "in");
    {
        std::ofstream out(dir.path / "in" / "a.jsonl");
        out << R"({"ref":"A-1","topic":"ctax","citizen":{"name":"Ann \"Nan\", Example","nino":"QQ123456C"},"note":"=HYPERLINK(\"http://x\")\nsecond line"})"
            << "\n";
        out << R"({"ref":"A-2","topic":"ctax","citizen":{"name":"Bob Example"}})" << "\n";
        out << R"({"ref":"A-3","topic":"bins","citizen":{"name":"Cy Other"}})" << "\n";
    }
    // council_tax records expire 6 s after collection; the sweep runs often.
    auto config = dir.write("fd.toml", R"(
[node]
data_dir = "data"
[retention]
default = "3650d"
sweep_interval = "200ms"
[[retention.policy]]
category = "council_tax"
retention = "6s"
[sources.src]
plugin = "jsonl-source"
poll_interval = "20ms"
[sources.src.config]
path = "in"
format = "flat"
categories = ["ref=reference.internal", "topic=classification.hint", "citizen.name=identity.name", "citizen.nino=identifier.nino", "note=content.free_text"]
[destinations.revs]
plugin = "file-drop"
[destinations.revs.config]
dir = "drop"
columns = ["ref=Reference", "citizen.name=Name", "citizen.nino=NINO", "note=Note", "@category=Category"]
[[classify.rule]]
category = "council_tax"
field = "topic"
equals = "ctax"
[[route]]
category = "council_tax"
destination = "revs"
purpose = "council tax enquiries"
profile = "revs"
[profiles.revs.fields]
"ref" = "keep"
"citizen.name" = "keep"
"note" = "keep"
)");
    const fs::path drop = dir.path / "drop", data = dir.path / "data";
    Process daemon({sbtest::switchboard_binary(), "run", "-c", config.string(), "--plugin-dir",
                    sbtest::plugin_dir(), "--set", "http.listen=127.0.0.1:0"});
    REQUIRE(daemon.wait_for_log("core: ready", 20s));

    // The file appears with both council tax records, never partially.
    Table got;
    bool arrived = wait_until(
        [&] {
            got = rows(drop);
            return got.size() >= 2;
        },
        5s);
    INFO(daemon.err());
    REQUIRE(arrived);
    auto files = drop_files(drop);
    REQUIRE(files.size() == 1);
    CHECK(files[0].filename().string().rfind("revs-", 0) == 0);
    CHECK(files[0].extension() == ".csv");
    auto table = parse_csv(read_file(files[0]));
    REQUIRE(table);
    CHECK((*table)[0] == std::vector<std::string>{"record_id", "Reference", "Name", "NINO", "Note", "Category"});
    REQUIRE(got.size() == 2);
    std::sort(got.begin(), got.end(), [](const auto& a, const auto& b) { return a[1] < b[1]; });
    CHECK(got[0][1] == "A-1");
    CHECK(got[0][2] == "Ann \"Nan\", Example");
    CHECK(got[0][3] == ""); // not in the profile: never leaves the core
    CHECK(got[0][4] == "'=HYPERLINK(\"http://x\")\nsecond line");
    CHECK(got[0][5] == "council_tax");
    CHECK(got[1][1] == "A-2");
    CHECK(got[1][4] == "");
    CHECK_FALSE(got[0][0].empty());
    CHECK(got[0][0] != got[1][0]);
    const std::string id1 = got[0][0], id2 = got[1][0];
    const std::string name = files[0].filename().string();

    // Expiry: the retention clock asks for each row to be erased; the file
    // goes with its last row, and the receipts are audited.
    bool gone = wait_until([&] { return drop_files(drop).empty(); }, 20s);
    CHECK(gone);
    CHECK(wait_until(
        [&] {
            std::string a = sbtest::audit_text(data);
            return a.find("receipt=removed from " + name) != std::string::npos &&
                   a.find("file deleted") != std::string::npos;
        },
        10s));
    daemon.signal(SIGTERM);
    CHECK(daemon.wait(20s) == 0);
    std::string audit = sbtest::audit_text(data);
    INFO(audit);
    CHECK(audit.find(id1) != std::string::npos);
    CHECK(audit.find(id2) != std::string::npos);
    CHECK(audit.find("instance=revs") != std::string::npos);

    // No payload value in the daemon's log or the audit.
    for (const char* value : {"Nan", "Bob Example", "QQ123456C", "HYPERLINK", "Cy Other"}) {
        INFO(value);
        CHECK(daemon.err().find(value) == std::string::npos);
        CHECK(audit.find(value) == std::string::npos);
    }
}
