// file-drop through its built .so and the SDK harness, on real files: CSV
// quoting of hostile values read back with an independent strict RFC 4180
// parser, columns from config, JSON lines, day rollover on the harness
// clock, atomic publication, redelivery, erasure and bad configuration.
#include <catch2/catch.hpp>

#include <switchboard/detail/json_record.hpp>
#include <switchboard/testing.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using sb::testing::Harness;
using sb::testing::TestRecord;
using sb::testing::toml_string;

constexpr std::int64_t kDay = 86'400'000;
constexpr std::int64_t kHour = 3'600'000;

std::string module() {
    const char* dir = std::getenv("SB_PLUGIN_DIR");
    if (!dir) FAIL("SB_PLUGIN_DIR is not set (run through meson test)");
    return std::string(dir) + "/destinations/file-drop/file-drop.so";
}

struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/sb-file-drop-XXXXXX";
        REQUIRE(::mkdtemp(tmpl));
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::vector<std::string> files(const TempDir& d) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(d.path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

using Table = std::vector<std::vector<std::string>>;

// Strict RFC 4180: every record ends with CRLF, quoted fields may hold
// anything (quotes doubled), unquoted fields hold no quote, CR or LF.
// nullopt on any deviation, so that a partial or malformed file fails.
std::optional<Table> parse_csv(std::string_view t) {
    Table rows;
    std::size_t i = 0;
    while (i < t.size()) {
        std::vector<std::string> row;
        for (;;) {
            std::string field;
            if (i < t.size() && t[i] == '"') {
                ++i;
                for (;;) {
                    if (i >= t.size()) return std::nullopt;
                    if (t[i] == '"') {
                        if (i + 1 < t.size() && t[i + 1] == '"') {
                            field += '"';
                            i += 2;
                            continue;
                        }
                        ++i;
                        break;
                    }
                    field += t[i++];
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
            if (t.substr(i, 2) == "\r\n") {
                i += 2;
                break;
            }
            return std::nullopt; // end of text without CRLF, or junk after a quote
        }
        rows.push_back(std::move(row));
    }
    if (rows.empty()) return std::nullopt;
    for (const auto& r : rows)
        if (r.size() != rows[0].size()) return std::nullopt;
    return rows;
}

Table csv_file(const std::string& path) {
    auto t = parse_csv(read_all(path));
    INFO(path);
    REQUIRE(t);
    return *t;
}

// The first column of each data row.
std::vector<std::string> csv_ids(const std::string& path) {
    std::vector<std::string> out;
    Table t = csv_file(path);
    for (std::size_t k = 1; k < t.size(); ++k) out.push_back(t[k][0]);
    return out;
}

// Each line of a JSON-lines file as path -> value text.
std::vector<std::map<std::string, std::string>> jsonl_file(const std::string& path) {
    std::vector<std::map<std::string, std::string>> out;
    std::ifstream in(path, std::ios::binary);
    for (std::string l; std::getline(in, l);) {
        std::map<std::string, std::string> m;
        sb::detail::JsonError e;
        INFO(l);
        REQUIRE(sb::detail::json_leaves(
            l,
            [&](std::string_view p, const sb_value& v) {
                std::string text;
                switch (v.type) {
                case SB_VALUE_STRING: text.assign(v.str, v.len); break;
                case SB_VALUE_INT: text = std::to_string(v.i); break;
                case SB_VALUE_BOOL: text = v.i ? "true" : "false"; break;
                case SB_VALUE_FLOAT: text = std::to_string(v.f); break;
                default: text = "null";
                }
                m[std::string(p)] = text;
                return true;
            },
            e));
        out.push_back(std::move(m));
    }
    return out;
}

TestRecord record(const std::string& id, const std::string& name = "Jane Example") {
    TestRecord r = Harness::record();
    r.meta("id", id);
    r.meta("channel", "phone");
    r.set("citizen.name", name, "identity.name");
    r.set("query.service", "council_tax", "classification.hint");
    return r;
}

Harness& csv(Harness& h, const TempDir& d) {
    h.config("dir", toml_string(d.path.string()))
        .config("columns", R"(["citizen.name=Name", "query.service=Service"])");
    return h;
}

// No temporary file is visible: only the day files.
bool no_temporaries(const TempDir& d) {
    for (const auto& n : files(d))
        if (n[0] == '.') return false;
    return true;
}

} // namespace

TEST_CASE("file-drop: descriptor and config errors name the key", "[file-drop]") {
    Harness h(module());
    CHECK(std::string(h.descriptor().name) == "file-drop");
    CHECK(h.descriptor().kind == SB_KIND_DESTINATION);
    CHECK(h.descriptor().capabilities & SB_CAP_ERASE);
    CHECK(h.descriptor().capabilities & SB_CAP_ASYNC_ACK);
    std::set<std::string> keys;
    for (const auto& f : h.schema()) keys.insert(f.key);
    CHECK(keys == std::set<std::string>{"dir", "format", "file_name", "columns", "id_header",
                                        "formula_guard", "utf8_bom"});
    CHECK_THROWS_WITH(h.create(), Catch::Contains("'dir'") && Catch::Contains("required"));

    TempDir d;
    h.config("dir", toml_string(d.path.string()));
    h.config("format", "\"xlsx\"");
    CHECK_THROWS_WITH(h.create(), Catch::Contains("'format'") && Catch::Contains("must be one of: csv, jsonl"));
    h.unset("format");

    // csv without columns
    CHECK(h.create() == SB_ERR_INVALID);
    CHECK_THAT(h.last_error(), Catch::Contains("'columns'") && Catch::Contains("at least one column"));

    struct Bad {
        const char* key;
        const char* value;
        const char* says;
    };
    for (const Bad& b : std::vector<Bad>{
             {"columns", R"(["citizen..name"])", "not a field path"},
             {"columns", R"(["@nino"])", "unknown envelope value"},
             {"columns", R"(["a=X", "b=X"])", "used twice"},
             {"columns", R"(["a=record_id"])", "id_header"},
             {"columns", R"(["a="])", "empty header"},
             {"file_name", R"("{destination}.csv")", "exactly one of {date}"},
             {"file_name", R"("{date}-{date}.csv")", "exactly one of {date}"},
             {"file_name", R"("x/{date}.csv")", "without '/'"},
             {"file_name", R"(".{date}.csv")", "must not start with '.'"},
             {"file_name", R"("{dept}-{date}.csv")", "unknown token {dept}"},
             {"file_name", R"("{date.csv")", "without '}'"},
         }) {
        INFO(b.key << " = " << b.value);
        h.config("columns", R"(["a"])").config(b.key, b.value);
        CHECK(h.create() == SB_ERR_INVALID);
        CHECK_THAT(h.last_error(), Catch::Contains(std::string("'") + b.key + "'") && Catch::Contains(b.says));
        h.unset("file_name");
    }

    // jsonl needs no columns; a missing directory is created.
    h.unset("columns").config("format", "\"jsonl\"").config("dir", toml_string(d / "nested/out"));
    REQUIRE(h.create() == SB_OK);
    CHECK(fs::is_directory(d / "nested/out"));
    h.destroy();
}

TEST_CASE("file-drop: an unwritable directory is a clear error, not a crash", "[file-drop]") {
    TempDir d;
    std::ofstream(d / "plain") << "x";
    Harness h(module());
    csv(h, d).config("dir", toml_string(d / "plain/out"));
    CHECK(h.create() == SB_ERR_INVALID);
    CHECK_THAT(h.last_error(), Catch::Contains("'dir'") && Catch::Contains("plain/out"));
    if (::geteuid() != 0) { // root writes anywhere: a read-only mode proves nothing then
        fs::create_directories(d / "ro");
        fs::permissions(d / "ro", fs::perms::owner_read | fs::perms::owner_exec);
        h.config("dir", toml_string(d / "ro"));
        CHECK(h.create() == SB_ERR_INVALID);
        CHECK_THAT(h.last_error(), Catch::Contains("cannot write to directory") && Catch::Contains("ro"));
        fs::permissions(d / "ro", fs::perms::owner_all);
    }

    // The directory goes away while running: flush fails transiently, with
    // the reason, and succeeds once it is back.
    h.config("dir", toml_string(d / "out"));
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    fs::remove_all(d / "out");
    std::ofstream(d / "out") << "not a directory";
    CHECK(h.deliver(record("r-1")) == SB_OK);
    CHECK(h.flush() == SB_ERR_TRANSIENT);
    CHECK_THAT(h.last_error(), Catch::Contains("test-2025-01-06.csv") && Catch::Contains("delivered again"));
    CHECK(h.counter("flush_failures") == 1);
    fs::remove(d / "out");
    fs::create_directories(d / "out");
    CHECK(h.deliver(record("r-1")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(csv_ids(d / "out/test-2025-01-06.csv") == std::vector<std::string>{"r-1"});
    CHECK_FALSE(h.logged("Jane"));
}

TEST_CASE("file-drop: CSV quoting of hostile values, with formula protection", "[file-drop]") {
    TempDir d;
    Harness h(module());
    h.config("dir", toml_string(d.path.string())).config("columns", R"(["v=Value"])");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    // value sent -> value an importer reads back
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"plain", "plain"},
        {"a,b,c", "a,b,c"},
        {"say \"hi\"", "say \"hi\""},
        {"\"", "\""},
        {"line1\nline2", "line1\nline2"},
        {"line1\r\nline2\r\n", "line1\r\nline2\r\n"},
        {",\"\n", ",\"\n"},
        {" padded ", " padded "},
        {"=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"},
        {"=1+2", "'=1+2"},
        {"+1+2", "'+1+2"},
        {"-1+cmd|' /C calc'!A0", "'-1+cmd|' /C calc'!A0"},
        {"@SUM(A1:A2)", "'@SUM(A1:A2)"},
        {"\t=1", "'\t=1"},
        {"-12.5", "-12.5"},        // a plain number stays a number
        {"+447700900123", "+447700900123"},
        {"Żuraw – café 😀", "Żuraw – café 😀"},
        {"bad \xFF byte", "bad \xEF\xBF\xBD byte"}, // invalid UTF-8 replaced
        {"", ""},
    };
    for (std::size_t k = 0; k < cases.size(); ++k) {
        TestRecord r = Harness::record();
        r.meta("id", "r-" + std::to_string(k));
        r.set("v", cases[k].first, "content.free_text");
        CHECK(h.deliver(r) == SB_OK);
    }
    CHECK(h.flush() == SB_OK);
    const std::string file = d / "test-2025-01-06.csv";
    std::string raw = read_all(file);
    Table t = csv_file(file);
    REQUIRE(t.size() == cases.size() + 1);
    CHECK(t[0] == std::vector<std::string>{"record_id", "Value"});
    for (std::size_t k = 0; k < cases.size(); ++k) {
        INFO(k << ": " << cases[k].first);
        CHECK(t[k + 1][0] == "r-" + std::to_string(k));
        CHECK(t[k + 1][1] == cases[k].second);
    }
    CHECK(h.counter("cells_guarded") == 6);
    CHECK(raw.find("\xFF") == std::string::npos);
    CHECK_FALSE(h.logged("HYPERLINK"));
    CHECK_FALSE(h.logged("line1"));

    // Without the guard the values are written as they are.
    TempDir d2;
    Harness raw_h(module());
    raw_h.config("dir", toml_string(d2.path.string()))
        .config("columns", R"(["v"])")
        .config("formula_guard", "false")
        .config("utf8_bom", "true");
    REQUIRE(raw_h.create() == SB_OK);
    REQUIRE(raw_h.start() == SB_OK);
    TestRecord r = Harness::record();
    r.meta("id", "x");
    r.set("v", "=1+2", "content.free_text");
    CHECK(raw_h.deliver(r) == SB_OK);
    CHECK(raw_h.flush() == SB_OK);
    std::string bytes = read_all(d2 / "test-2025-01-06.csv");
    REQUIRE(bytes.substr(0, 3) == "\xEF\xBB\xBF");
    auto t2 = parse_csv(std::string_view(bytes).substr(3));
    REQUIRE(t2);
    CHECK((*t2)[0] == std::vector<std::string>{"record_id", "v"});
    CHECK((*t2)[1] == std::vector<std::string>{"x", "=1+2"});
}

TEST_CASE("file-drop: columns from config, envelope values, absent fields and lists",
          "[file-drop]") {
    TempDir d;
    Harness h(module());
    h.instance_name("revenues")
        .config("dir", toml_string(d.path.string()))
        .config("id_header", "\"Switchboard ID\"")
        .config("file_name", "\"ctax_{yyyymmdd}_{destination}.csv\"")
        .config("columns", R"(["@occurred_at=Contact time", "@channel=Channel", "citizen.name=Name",
                               "citizen.address.postcode=Postcode", "content.turns=Conversation",
                               "citizen.address=Address", "case.amount", "case.urgent", "case.count",
                               "case.closed", "@seq", "@purpose=Purpose", "@profile_version"])");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    TestRecord full = record("r-1", "Ann O'Neil");
    full.meta("occurred_at", "2025-01-06T08:59:00Z");
    full.set("citizen.address.postcode", "M1 1AA", "contact.address");
    full.set("citizen.address.line1", "1 High St", "contact.address");
    full.set("content.turns[0].text", "hello, \"council\"", "content.free_text");
    full.set("content.turns[1].text", "bye", "content.free_text");
    full.set("case.amount", 12.5, "financial.amount");
    full.set("case.urgent", true, "classification.hint");
    full.set("case.count", -3, "classification.hint");
    full.set_null("case.closed", "classification.hint");
    sb::testing::DeliveryOptions o;
    o.purpose = "council tax";
    o.profile_version = 4;
    CHECK(h.deliver(full, o) == SB_OK);
    TestRecord sparse = Harness::record();
    sparse.meta("id", "r-2");
    sparse.set("other", "x", "unknown");
    CHECK(h.deliver(sparse, o) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(files(d) == std::vector<std::string>{"ctax_20250106_revenues.csv"});
    Table t = csv_file(d / "ctax_20250106_revenues.csv");
    REQUIRE(t.size() == 3);
    CHECK(t[0] == std::vector<std::string>{"Switchboard ID", "Contact time", "Channel", "Name", "Postcode",
                                           "Conversation", "Address", "case.amount", "case.urgent",
                                           "case.count", "case.closed", "@seq", "Purpose", "@profile_version"});
    CHECK(t[1] == std::vector<std::string>{
                      "r-1", "2025-01-06T08:59:00Z", "phone", "Ann O'Neil", "M1 1AA",
                      R"([{"text":"hello, \"council\""},{"text":"bye"}])",
                      R"({"line1":"1 High St","postcode":"M1 1AA"})", "12.5", "true", "-3", "", "1",
                      "council tax", "4"});
    // Absent fields are empty cells.
    CHECK(t[2] == std::vector<std::string>{"r-2", "", "", "", "", "", "", "", "", "", "", "2", "council tax", "4"});
}

TEST_CASE("file-drop: JSON lines, whole records or columns", "[file-drop]") {
    TempDir d;
    Harness h(module());
    h.config("dir", toml_string(d.path.string())).config("format", "\"jsonl\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    TestRecord r1 = record("r-1", "Bob \"B\"\nSmith");
    CHECK(h.deliver(r1) == SB_OK);
    CHECK(h.deliver(record("r-2")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    const std::string file = d / "test-2025-01-06.jsonl";
    auto lines = jsonl_file(file);
    REQUIRE(lines.size() == 2);
    CHECK(lines[0]["record_id"] == "r-1");
    CHECK(lines[0]["seq"] == "1");
    CHECK(lines[0]["record.fields.citizen.name"] == "Bob \"B\"\nSmith");
    CHECK(lines[1]["record_id"] == "r-2");
    h.destroy();

    // With columns: one member per column, null when absent; restart keeps the index.
    h.config("columns", R"(["citizen.name=name", "citizen.nino=nino"])");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.logged("2 record(s) in 1 file(s)"));
    CHECK(h.deliver(record("r-2")) == SB_OK); // already there
    CHECK(h.deliver(record("r-3", "Cy")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    lines = jsonl_file(file);
    REQUIRE(lines.size() == 3);
    CHECK(lines[2] == std::map<std::string, std::string>{{"record_id", "r-3"}, {"name", "Cy"}, {"nino", "null"}});
    CHECK(h.counter("duplicates_skipped") == 1);
    CHECK_FALSE(h.logged("Smith"));
}

TEST_CASE("file-drop: one file per day on the host clock", "[file-drop]") {
    TempDir d;
    Harness h(module());
    csv(h, d);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.deliver(record("r-1")) == SB_OK); // 2025-01-06T09:00Z
    CHECK(h.flush() == SB_OK);
    h.advance(14 * kHour + 59 * 60'000); // 23:59
    CHECK(h.deliver(record("r-2")) == SB_OK);
    h.advance(2 * 60'000); // 00:01 on the 7th: the same batch spans midnight
    CHECK(h.deliver(record("r-3")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    h.advance(kDay);
    CHECK(h.deliver(record("r-4")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(files(d) == std::vector<std::string>{"test-2025-01-06.csv", "test-2025-01-07.csv", "test-2025-01-08.csv"});
    CHECK(csv_ids(d / "test-2025-01-06.csv") == std::vector<std::string>{"r-1", "r-2"});
    CHECK(csv_ids(d / "test-2025-01-07.csv") == std::vector<std::string>{"r-3"});
    CHECK(csv_ids(d / "test-2025-01-08.csv") == std::vector<std::string>{"r-4"});
    // A retry of an old record on a later day is not written again anywhere.
    CHECK(h.deliver(record("r-1")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(csv_ids(d / "test-2025-01-08.csv") == std::vector<std::string>{"r-4"});
}

TEST_CASE("file-drop: nothing is visible before flush, and a failed write leaves the file whole",
          "[file-drop]") {
    TempDir d;
    // Left by a crash during an earlier write: removed at start.
    std::ofstream(d / ".test-2025-01-05.csv.tmp") << "record_id,Name\r\nr-0,partial";
    std::ofstream(d / ".unrelated.tmp") << "x";
    Harness h(module());
    csv(h, d);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(files(d) == std::vector<std::string>{".unrelated.tmp"});
    fs::remove(d / ".unrelated.tmp");

    const std::string file = d / "test-2025-01-06.csv";
    CHECK(h.deliver(record("r-1")) == SB_OK);
    CHECK_FALSE(fs::exists(file)); // buffered only
    CHECK(h.flush() == SB_OK);
    CHECK(csv_ids(file) == std::vector<std::string>{"r-1"});
    CHECK(no_temporaries(d));
    const std::string durable = read_all(file);

    // The next write fails part way (file size limit): the visible file is
    // the previous complete one, no temporary file remains.
    struct rlimit old {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto previous = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old;
    small.rlim_cur = durable.size() + 40;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    CHECK(h.deliver(record("r-2")) == SB_OK);
    CHECK(h.deliver(record("r-3", std::string(200, 'x'))) == SB_OK);
    sb_status s = h.flush();
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, previous);
    CHECK(s == SB_ERR_TRANSIENT);
    CHECK_THAT(h.last_error(), Catch::Contains("could not write test-2025-01-06.csv"));
    CHECK(read_all(file) == durable);
    CHECK(no_temporaries(d));

    // The host delivers both again: each lands once, and the file parses.
    CHECK(h.deliver(record("r-2")) == SB_OK);
    CHECK(h.deliver(record("r-3", std::string(200, 'x'))) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(csv_ids(file) == std::vector<std::string>{"r-1", "r-2", "r-3"});
    CHECK(no_temporaries(d));
}

TEST_CASE("file-drop: a reader polling the file always sees a whole CSV", "[file-drop]") {
    TempDir d;
    Harness h(module());
    csv(h, d);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    const std::string file = d / "test-2025-01-06.csv";
    std::atomic<bool> done{false};
    std::atomic<int> reads{0}, bad{0};
    std::thread reader([&] {
        while (!done) {
            std::string text = read_all(file);
            if (text.empty()) continue; // not created yet
            ++reads;
            auto t = parse_csv(text);
            if (!t || t->at(0) != std::vector<std::string>{"record_id", "Name", "Service"}) ++bad;
        }
    });
    for (int k = 0; k < 200; ++k) {
        CHECK(h.deliver(record("r-" + std::to_string(k), "line one\nline \"two\", " + std::string(k * 10, 'y'))) == SB_OK);
        if (k % 3 == 0) CHECK(h.flush() == SB_OK);
    }
    CHECK(h.flush() == SB_OK);
    done = true;
    reader.join();
    CHECK(reads > 0);
    CHECK(bad == 0);
    CHECK(csv_ids(file).size() == 200);
}

TEST_CASE("file-drop: a redelivered record is written once, also after a restart", "[file-drop]") {
    TempDir d;
    Harness h(module());
    csv(h, d);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    const std::string file = d / "test-2025-01-06.csv";
    CHECK(h.deliver(record("r-1")) == SB_OK);
    CHECK(h.deliver(record("r-1")) == SB_OK); // twice in one batch
    CHECK(h.deliver(record("r-2")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(h.deliver(record("r-2")) == SB_OK); // after it was written
    CHECK(h.flush() == SB_OK);
    CHECK(csv_ids(file) == std::vector<std::string>{"r-1", "r-2"});

    // Crash between write and acknowledgement: the new instance finds the
    // ids in the files.
    h.destroy();
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.logged("2 record(s) in 1 file(s)"));
    CHECK(h.deliver(record("r-2")) == SB_OK);
    CHECK(h.deliver(record("r-3")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(csv_ids(file) == std::vector<std::string>{"r-1", "r-2", "r-3"});
    CHECK(h.counter("duplicates_skipped") == 3);
    CHECK(h.gauges().at("records_held") == 3);
}

TEST_CASE("file-drop: erase removes the row with a receipt and deletes an emptied file",
          "[file-drop]") {
    TempDir d;
    Harness h(module());
    csv(h, d);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    // r-3's name looks like another row starting with r-2's id.
    CHECK(h.deliver(record("r-1")) == SB_OK);
    CHECK(h.deliver(record("r-2", "Zed")) == SB_OK);
    CHECK(h.deliver(record("r-3", "x\r\nr-2,Zed,council_tax")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    h.advance(kDay);
    CHECK(h.deliver(record("r-4")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    const std::string day1 = d / "test-2025-01-06.csv", day2 = d / "test-2025-01-07.csv";

    auto receipt = [&] {
        REQUIRE_FALSE(h.completions().empty());
        CHECK(h.completions().back().status == SB_OK);
        return h.completions().back().receipt;
    };
    CHECK(h.erase("r-2", "", SB_ERASE_REQUEST) == SB_PENDING);
    CHECK(receipt() == "removed from test-2025-01-06.csv");
    Table t = csv_file(day1);
    REQUIRE(t.size() == 3);
    CHECK(t[1][0] == "r-1");
    CHECK(t[2] == std::vector<std::string>{"r-3", "x\r\nr-2,Zed,council_tax", "council_tax"});
    CHECK(no_temporaries(d));

    CHECK(h.erase("r-2", "", SB_ERASE_REQUEST) == SB_PENDING);
    CHECK(receipt() == "not present");
    CHECK(h.erase("r-404") == SB_PENDING);
    CHECK(receipt() == "not present");

    // Retention erases rows too; the last one takes the file with it.
    CHECK(h.erase("r-1", "", SB_ERASE_RETENTION) == SB_PENDING);
    CHECK(receipt() == "removed from test-2025-01-06.csv");
    CHECK(csv_ids(day1) == std::vector<std::string>{"r-3"});
    CHECK(h.erase("r-3", "", SB_ERASE_RETENTION) == SB_PENDING);
    CHECK(receipt() == "removed from test-2025-01-06.csv; file deleted (no rows left)");
    CHECK(files(d) == std::vector<std::string>{"test-2025-01-07.csv"});
    CHECK(h.counter("rows_erased") == 3);
    CHECK(h.counter("files_deleted") == 1);

    // An unflushed row is dropped before it reaches the file.
    CHECK(h.deliver(record("r-5")) == SB_OK);
    CHECK(h.erase("r-5", "", SB_ERASE_REQUEST) == SB_PENDING);
    CHECK(receipt() == "removed before it was written");
    CHECK(h.flush() == SB_OK);
    CHECK(csv_ids(day2) == std::vector<std::string>{"r-4"});

    // After a restart the index still knows where r-4 is; and a day's file
    // that was emptied is started afresh with its header.
    h.destroy();
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.erase("r-4", "", SB_ERASE_RETENTION) == SB_PENDING);
    CHECK(receipt() == "removed from test-2025-01-07.csv; file deleted (no rows left)");
    CHECK(files(d).empty());
    CHECK(h.deliver(record("r-6")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(csv_file(day2)[0] == std::vector<std::string>{"record_id", "Name", "Service"});
    CHECK(csv_ids(day2) == std::vector<std::string>{"r-6"});
    CHECK_FALSE(h.logged("Zed"));
    CHECK_FALSE(h.logged("Jane"));
}

TEST_CASE("file-drop: erase in JSON lines", "[file-drop]") {
    TempDir d;
    Harness h(module());
    h.config("dir", toml_string(d.path.string())).config("format", "\"jsonl\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.deliver(record("r-1", R"({"record_id":"r-2"})")) == SB_OK);
    CHECK(h.deliver(record("r-2")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(h.erase("r-2", "", SB_ERASE_REQUEST) == SB_PENDING);
    CHECK(h.completions().back().receipt == "removed from test-2025-01-06.jsonl");
    auto lines = jsonl_file(d / "test-2025-01-06.jsonl");
    REQUIRE(lines.size() == 1);
    CHECK(lines[0]["record_id"] == "r-1");
}
