// jsonl-file through its built .so and the SDK harness: the flush durability
// contract, rotation by day and size, expiry by timer and erasure on request.
#include <catch2/catch.hpp>

#include <switchboard/detail/json_record.hpp>
#include <switchboard/testing.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
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
    return std::string(dir) + "/destinations/jsonl/jsonl-file.so";
}

struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/sb-jsonl-file-XXXXXX";
        REQUIRE(::mkdtemp(tmpl));
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::vector<std::string> read_lines(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<std::string> out;
    std::string l;
    while (std::getline(in, l)) out.push_back(l);
    return out;
}

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

// The record ids of a file's lines, in order.
std::vector<std::string> ids(const std::string& path) {
    std::vector<std::string> out;
    for (const auto& l : read_lines(path)) {
        std::string id;
        sb::detail::JsonError e;
        REQUIRE(sb::detail::json_leaves(
            l,
            [&](std::string_view p, const sb_value& v) {
                if (p == "record_id") id.assign(v.str, v.len);
                return true;
            },
            e));
        out.push_back(id);
    }
    return out;
}

TestRecord record(const std::string& id, const std::string& text = "Jane Example") {
    TestRecord r = Harness::record();
    r.meta("id", id);
    r.set("citizen.name", text, "identity.name");
    r.set("query.service", "council_tax", "classification.hint");
    return r;
}

Harness& configure(Harness& h, const TempDir& d) {
    h.config("dir", toml_string(d.path.string()));
    return h;
}

} // namespace

TEST_CASE("jsonl-file: descriptor and config", "[jsonl-file]") {
    Harness h(module());
    CHECK(std::string(h.descriptor().name) == "jsonl-file");
    CHECK(h.descriptor().kind == SB_KIND_DESTINATION);
    CHECK(h.descriptor().capabilities & SB_CAP_TIMERS);
    CHECK(h.descriptor().capabilities & SB_CAP_ERASE);
    std::set<std::string> keys;
    for (const auto& f : h.schema()) keys.insert(f.key);
    CHECK(keys == std::set<std::string>{"dir", "max_file_size", "retention", "sweep_interval"});
    CHECK_THROWS_WITH(h.create(), Catch::Contains("'dir'") && Catch::Contains("required"));
    TempDir d;
    configure(h, d).config("retention", "\"10m\"");
    CHECK_THROWS_WITH(h.create(), Catch::Contains("retention"));
    h.unset("retention").config("dir", toml_string(d / "nested/out"));
    REQUIRE(h.create() == SB_OK); // created if missing
    CHECK(fs::is_directory(d / "nested/out"));
    h.destroy();
    std::ofstream(d / "plain") << "x";
    h.config("dir", toml_string(d / "plain"));
    CHECK(h.create() == SB_ERR_INVALID);
    CHECK_THAT(h.last_error(), Catch::Contains("'dir'"));
}

TEST_CASE("jsonl-file: deliver buffers, flush makes it durable", "[jsonl-file]") {
    TempDir d;
    Harness h(module());
    h.instance_name("dept-feed");
    configure(h, d);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    const std::string file = d / "dept-feed-2025-01-06.jsonl";

    sb::testing::DeliveryOptions o;
    o.purpose = "council_tax_enquiry";
    o.profile = "revenues";
    o.profile_version = 3;
    TestRecord r1 = record("r-1");
    CHECK(h.deliver(r1, o) == SB_OK);
    CHECK(h.deliver(record("r-2", "Bob \"B\" \xC3\xA9"), o) == SB_OK);
    // Nothing reaches the file before the flush.
    CHECK(read_lines(file).empty());
    CHECK(h.flush() == SB_OK);
    auto lines = read_lines(file);
    REQUIRE(lines.size() == 2);
    TestRecord sent = r1;
    CHECK(lines[0] == R"({"seq":1,"record_id":"r-1","purpose":"council_tax_enquiry","profile":"revenues","profile_version":3,"record":)" +
                          sent.json() + "}");
    CHECK_THAT(lines[1], Catch::StartsWith(R"({"seq":2,"record_id":"r-2",)"));
    // Each line is one well-formed JSON object.
    for (const auto& l : lines) {
        sb::detail::JsonError e;
        CHECK(sb::detail::json_leaves(l, [](std::string_view, const sb_value&) { return true; }, e));
    }
    CHECK(h.flush() == SB_OK); // nothing pending: still fine
    CHECK(h.counter("lines_written") == 2);
    CHECK_FALSE(h.logged("Jane"));
    CHECK_FALSE(h.logged("Bob"));

    // A restart appends to the same day's file.
    h.destroy();
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.deliver(record("r-3")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(ids(file) == std::vector<std::string>{"r-1", "r-2", "r-3"});
}

TEST_CASE("jsonl-file: a failed flush keeps nothing, so redelivery writes once", "[jsonl-file]") {
    TempDir d;
    Harness h(module());
    configure(h, d);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    const std::string file = d / "test-2025-01-06.jsonl";
    CHECK(h.deliver(record("r-1")) == SB_OK);
    REQUIRE(h.flush() == SB_OK);
    const std::string durable = read_all(file);

    // The file may not grow by more than 100 bytes: the write fails part way.
    struct rlimit old {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto previous = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old;
    small.rlim_cur = durable.size() + 100;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    CHECK(h.deliver(record("r-2")) == SB_OK);
    CHECK(h.deliver(record("r-3")) == SB_OK);
    sb_status s = h.flush();
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, previous);
    CHECK(s == SB_ERR_TRANSIENT);
    CHECK_THAT(h.last_error(), Catch::Contains("could not make output durable"));
    CHECK(read_all(file) == durable); // the partial write was cut back
    CHECK(h.counter("flush_failures") == 1);

    // The host delivers both again after the failed flush: each lands once.
    CHECK(h.deliver(record("r-2")) == SB_OK);
    CHECK(h.deliver(record("r-3")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(ids(file) == std::vector<std::string>{"r-1", "r-2", "r-3"});
    CHECK(h.deliveries().at(3).attempt == 2);
}

TEST_CASE("jsonl-file: rotation by day", "[jsonl-file]") {
    TempDir d;
    Harness h(module());
    configure(h, d);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.deliver(record("r-1")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    h.advance(kDay); // 2025-01-07T09:00Z
    CHECK(h.deliver(record("r-2")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    // One flush spanning midnight writes each line to its own day.
    h.advance(14 * kHour + 59 * 60'000); // 23:59
    CHECK(h.deliver(record("r-3")) == SB_OK);
    h.advance(2 * 60'000); // 00:01 on the 8th
    CHECK(h.deliver(record("r-4")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(files(d) == std::vector<std::string>{"test-2025-01-06.jsonl", "test-2025-01-07.jsonl",
                                              "test-2025-01-08.jsonl"});
    CHECK(ids(d / "test-2025-01-06.jsonl") == std::vector<std::string>{"r-1"});
    CHECK(ids(d / "test-2025-01-07.jsonl") == std::vector<std::string>{"r-2", "r-3"});
    CHECK(ids(d / "test-2025-01-08.jsonl") == std::vector<std::string>{"r-4"});
}

TEST_CASE("jsonl-file: rotation by size", "[jsonl-file]") {
    TempDir d;
    Harness h(module());
    configure(h, d).config("max_file_size", "\"1KiB\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    for (int k = 1; k <= 8; ++k) CHECK(h.deliver(record("r-" + std::to_string(k))) == SB_OK);
    CHECK(h.flush() == SB_OK);
    // A line longer than the limit gets a file of its own.
    CHECK(h.deliver(record("r-big", std::string(3000, 'x'))) == SB_OK);
    CHECK(h.deliver(record("r-9")) == SB_OK);
    CHECK(h.flush() == SB_OK);

    auto names = files(d);
    REQUIRE(names.size() >= 4);
    CHECK(names[0] == "test-2025-01-06.1.jsonl");
    CHECK(std::find(names.begin(), names.end(), "test-2025-01-06.jsonl") != names.end());
    std::vector<std::string> all;
    std::vector<std::string> order = {"test-2025-01-06.jsonl"};
    for (int n = 1; n < static_cast<int>(names.size()); ++n)
        order.push_back("test-2025-01-06." + std::to_string(n) + ".jsonl");
    for (const auto& name : order) {
        INFO(name);
        REQUIRE(fs::exists(d / name));
        auto content = read_all(d / name);
        CHECK(content.back() == '\n'); // whole lines only
        auto these = ids(d / name);
        if (these != std::vector<std::string>{"r-big"}) CHECK(content.size() <= 1024);
        all.insert(all.end(), these.begin(), these.end());
    }
    CHECK(all == std::vector<std::string>{"r-1", "r-2", "r-3", "r-4", "r-5", "r-6", "r-7", "r-8",
                                          "r-big", "r-9"});
    CHECK(h.counter("files_rotated") >= 3);

    // After a restart, appending carries on in the last file of the day.
    h.destroy();
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.deliver(record("r-10")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    auto last = d / order.back();
    CHECK(ids(last).back() == "r-10");
    CHECK(files(d).size() == names.size());
}

TEST_CASE("jsonl-file: files expire on the retention clock", "[jsonl-file]") {
    TempDir d;
    // Left over from an earlier run, long expired; and files that are not ours.
    std::ofstream(d / "test-2024-11-01.jsonl") << "{}\n";
    std::ofstream(d / "other-2024-11-01.jsonl") << "{}\n";
    std::ofstream(d / "test-2024-11-01.jsonl.bak") << "{}\n";
    std::ofstream(d / ".test-2025-01-05.jsonl.erase.tmp") << "{}\n";
    Harness h(module());
    configure(h, d).config("retention", "\"2d\"").config("sweep_interval", "\"1h\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(files(d) == std::vector<std::string>{"other-2024-11-01.jsonl", "test-2024-11-01.jsonl.bak"});
    CHECK(h.active_timers() == 1);

    CHECK(h.deliver(record("r-1")) == SB_OK); // 2025-01-06T09:00Z
    CHECK(h.flush() == SB_OK);
    const std::string file = d / "test-2025-01-06.jsonl";
    // Its newest line may be as late as 23:59:59 on the 6th: kept until the
    // 8th ends (6th + 1 day + 2 days retention).
    h.advance(2 * kDay + 14 * kHour); // 2025-01-08T23:00Z
    CHECK(fs::exists(file));
    h.advance(2 * kHour); // the sweep after midnight
    CHECK_FALSE(fs::exists(file));
    CHECK(h.counter("files_expired") == 2); // with the leftover swept at start
    CHECK(h.logged("deleted test-2025-01-06.jsonl (retention)"));
    CHECK(fs::exists(d / "other-2024-11-01.jsonl"));

    // Writing carries on in a new file after the current one expired.
    CHECK(h.deliver(record("r-2")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(ids(d / "test-2025-01-09.jsonl") == std::vector<std::string>{"r-2"});
}

TEST_CASE("jsonl-file: the default retention is 28 days", "[jsonl-file]") {
    TempDir d;
    Harness h(module());
    configure(h, d);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.deliver(record("r-1")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    h.advance(28 * kDay);
    CHECK(fs::exists(d / "test-2025-01-06.jsonl"));
    h.advance(kDay);
    CHECK_FALSE(fs::exists(d / "test-2025-01-06.jsonl"));
}

TEST_CASE("jsonl-file: an erasure request rewrites the files without the record",
          "[jsonl-file]") {
    TempDir d;
    Harness h(module());
    configure(h, d);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.deliver(record("r-1")) == SB_OK);
    CHECK(h.deliver(record("r-2")) == SB_OK);
    // A record whose content looks like another record's line start.
    CHECK(h.deliver(record("r-3", R"({"seq":1,"record_id":"r-2","purpose":"x"})")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    h.advance(kDay);
    CHECK(h.deliver(record("r-2")) == SB_OK); // delivered again on the next day
    CHECK(h.deliver(record("r-4")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(h.deliver(record("r-2")) == SB_OK); // and still unflushed

    const std::string day1 = d / "test-2025-01-06.jsonl", day2 = d / "test-2025-01-07.jsonl";
    CHECK(h.erase("r-2", "", SB_ERASE_REQUEST) == SB_OK);
    CHECK(ids(day1) == std::vector<std::string>{"r-1", "r-3"});
    CHECK(ids(day2) == std::vector<std::string>{"r-4"});
    CHECK(files(d) == std::vector<std::string>{"test-2025-01-06.jsonl", "test-2025-01-07.jsonl"});
    CHECK(h.logged("erased record r-2: 2 line(s) in 2 file(s), 1 unflushed"));
    CHECK(h.counter("lines_erased") == 3);
    CHECK_FALSE(h.logged("Jane"));

    // Appending after a rewrite goes to the new file, not the replaced one.
    CHECK(h.flush() == SB_OK);
    CHECK(h.deliver(record("r-5")) == SB_OK);
    CHECK(h.flush() == SB_OK);
    CHECK(ids(day2) == std::vector<std::string>{"r-4", "r-5"});

    // Nothing held: still confirmed.
    CHECK(h.erase("r-404", "", SB_ERASE_REQUEST) == SB_OK);
    CHECK(ids(day1) == std::vector<std::string>{"r-1", "r-3"});

    // Retention erasures are left to the file expiry (README): no rewrite.
    auto before = read_all(day1);
    CHECK(h.erase("r-1", "", SB_ERASE_RETENTION) == SB_OK);
    CHECK(read_all(day1) == before);
    CHECK(h.counter("erase_retention") == 1);
}
