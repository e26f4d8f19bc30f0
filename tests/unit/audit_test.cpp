// The audit trail against real files in a temporary directory: format, chain,
// tamper detection, crash recovery, concurrency, and a hidden benchmark
// (`audit_test [.bench]`).
#include "audit/audit_log.hpp"

#include <catch2/catch.hpp>
#include <openssl/sha.h>

#include "process.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>
#include <type_traits>

using switchboard::audit::Attr;
using switchboard::audit::AuditLog;
using switchboard::audit::Entry;
using switchboard::audit::Head;
using switchboard::audit::Name;
using switchboard::audit::Record;
using sbtest::TempDir;
namespace fs = std::filesystem;
namespace kind = switchboard::audit::kind;

// A key can only be a literal: nothing read at run time can become one.
static_assert(!std::is_constructible_v<Name, std::string>);
static_assert(!std::is_constructible_v<Name, const char*>);
static_assert(!std::is_constructible_v<Name, std::string_view>);

namespace {

constexpr std::int64_t day_ms = 86'400'000;
constexpr std::int64_t jan6 = 1'736'121'600'000; // 2025-01-06T00:00:00.000Z

std::int64_t at(int day, int hour, int minute = 0) {
    return jan6 + day * day_ms + hour * 3'600'000LL + minute * 60'000LL;
}

std::vector<std::string> lines_of(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
}

void write_lines(const fs::path& p, const std::vector<std::string>& lines) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    for (const auto& l : lines) out << l << '\n';
}


std::vector<std::string> split_tabs(const std::string& line) {
    std::vector<std::string> f;
    std::size_t start = 0;
    for (std::size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1)
        f.push_back(line.substr(start, tab - start));
    f.push_back(line.substr(start));
    return f;
}

// The chain rule, computed independently of the code under test.
std::string chain_hash(const std::string& prev, const std::string& body) {
    const std::string input = prev + "\n" + body;
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), d);
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (unsigned char c : d) {
        out += hex[c >> 4];
        out += hex[c & 15];
    }
    return out;
}

std::string body_of(const std::string& line) { return line.substr(0, line.rfind('\t')); }

// A realistic day: ingest, disclose, deliver per record.
void write_record(AuditLog& log, std::int64_t ts, const std::string& id) {
    log.append(ts, Entry{kind::ingest, id, {{"source", "verint"}, {"channel", "phone"}}});
    log.append(ts + 1, Entry{kind::disclose, id,
                             {{"destination", "revs-bens"},
                              {"purpose", "council_tax_query"},
                              {"profile", "revs-bens@3"},
                              {"fields", "citizen.name:keep,contact.phone:mask"}}});
    log.append(ts + 2, Entry{kind::deliver, id,
                             {{"destination", "revs-bens"}, {"attempt", "1"}, {"receipt", "r-" + id}}});
}

// 3 days x 4 records x 3 entries = 36 entries in three files.
Head write_sample(const fs::path& dir) {
    AuditLog log(dir);
    for (int day = 0; day < 3; ++day) {
        for (int r = 0; r < 4; ++r)
            write_record(log, at(day, 9 + r), "rec-" + std::to_string(day) + "-" + std::to_string(r));
        REQUIRE(log.sync().ok());
    }
    return log.durable_head();
}

std::string file(int day) {
    static const char* names[] = {"audit-2025-01-06.log", "audit-2025-01-07.log",
                                  "audit-2025-01-08.log", "audit-2025-01-09.log"};
    return names[day];
}

std::string describe(const AuditLog::VerifyResult& r) {
    std::string s;
    for (const auto& p : r.problems)
        s += p.file + ":" + std::to_string(p.line) + " seq " + std::to_string(p.seq) + ": " +
             p.what + "\n";
    return s;
}

} // namespace

TEST_CASE("an entry is one line whose hash chains from the previous one") {
    TempDir tmp("sb-audit");
    const auto dir = tmp.path / "audit";
    {
        AuditLog log(dir);
        log.append(at(0, 9), Entry{kind::ingest, "rec-1", {{"source", "verint"}, {"channel", "phone"}}});
        log.append(at(0, 9, 1), kind::deliver, "rec-1", "destination=revs-bens;attempt=1");
        log.append(at(0, 9, 2), Entry{"retention_sweep", "", {{"count", "3"}}});
        const auto r = log.sync();
        REQUIRE(r.ok());
        CHECK(r.head.seq == 3);
        CHECK(r.head == log.head());
        CHECK(r.head == log.durable_head());
    }
    struct stat st {};
    REQUIRE(::stat(dir.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    REQUIRE(::stat((dir / file(0)).c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);

    const auto lines = lines_of(dir / file(0));
    REQUIRE(lines.size() == 3);
    const auto f = split_tabs(lines[0]);
    REQUIRE(f.size() == 6);
    CHECK(f[0] == "1");
    CHECK(f[1] == "2025-01-06T09:00:00.000Z");
    CHECK(f[2] == "ingest");
    CHECK(f[3] == "rec-1");
    CHECK(f[4] == "source=verint;channel=phone");
    CHECK(f[5] == chain_hash(std::string(switchboard::audit::genesis_hash), body_of(lines[0])));
    CHECK(split_tabs(lines[1])[5] == chain_hash(f[5], body_of(lines[1])));
    CHECK(split_tabs(lines[1])[1] == "2025-01-06T09:01:00.000Z");
    CHECK(split_tabs(lines[2])[3] == "-"); // no record
    CHECK(split_tabs(lines[2])[2] == "retention_sweep");
    CHECK(AuditLog::verify(dir).ok);
}

TEST_CASE("an untouched log over several days verifies") {
    TempDir tmp("sb-audit");
    const auto head = write_sample(tmp.path);
    CHECK(head.seq == 36);
    for (int d = 0; d < 3; ++d) CHECK(lines_of(tmp.path / file(d)).size() == 12);
    CHECK(split_tabs(lines_of(tmp.path / file(1))[0])[0] == "13"); // seq continues across files

    const auto r = AuditLog::verify(tmp.path, head);
    INFO(describe(r));
    CHECK(r.ok);
    CHECK(r.entries == 36);
    CHECK(r.files == 3);
    CHECK(r.last == head);
    CHECK(AuditLog::verify(tmp.path / "none").ok); // no log yet: nothing to contradict
}

TEST_CASE("tampering is detected and located") {
    TempDir tmp("sb-audit");
    const auto head = write_sample(tmp.path);
    const auto day1 = tmp.path / file(1);
    auto lines = lines_of(day1); // seq 13..24

    SECTION("one character of a detail changed") {
        const auto pos = lines[4].find("revs-bens");
        REQUIRE(pos != std::string::npos);
        lines[4][pos] = 'R'; // seq 17
        write_lines(day1, lines);
        const auto r = AuditLog::verify(tmp.path, head);
        INFO(describe(r));
        REQUIRE(r.problems.size() == 1);
        CHECK(r.problems[0].seq == 17);
        CHECK(r.problems[0].file == file(1));
        CHECK(r.problems[0].line == 5);
        CHECK(r.problems[0].what == "hash mismatch (entry edited)");
    }
    SECTION("a line deleted") {
        lines.erase(lines.begin() + 4); // seq 17
        write_lines(day1, lines);
        const auto r = AuditLog::verify(tmp.path, head);
        INFO(describe(r));
        REQUIRE(r.problems.size() == 1);
        CHECK(r.problems[0].seq == 18);
        CHECK(r.problems[0].line == 5);
        CHECK(r.problems[0].what == "entry missing (seq 18 follows 16)");
    }
    SECTION("two lines swapped") {
        std::swap(lines[4], lines[5]); // seq 17, 18
        write_lines(day1, lines);
        const auto r = AuditLog::verify(tmp.path, head);
        INFO(describe(r));
        REQUIRE(r.problems.size() == 1);
        CHECK(r.problems[0].seq == 17);
        CHECK(r.problems[0].file == file(1));
        CHECK(r.problems[0].line == 6);
        CHECK(r.problems[0].what == "out of order (seq 17 after 18)");
    }
    SECTION("two lines swapped, the one moved up also edited") {
        lines[5].replace(lines[5].find("attempt=1"), 9, "attempt=2"); // seq 18
        std::swap(lines[4], lines[5]);
        write_lines(day1, lines);
        const auto r = AuditLog::verify(tmp.path, head);
        INFO(describe(r));
        REQUIRE(r.problems.size() == 2);
        CHECK(r.problems[0].seq == 18); // checked once its predecessor turned up
        CHECK(r.problems[0].line == 5);
        CHECK(r.problems[0].what == "hash mismatch (entry edited)");
        CHECK(r.problems[1].what == "out of order (seq 17 after 18)");
    }
    SECTION("a line duplicated") {
        lines.insert(lines.begin() + 6, lines[2]);
        write_lines(day1, lines);
        const auto r = AuditLog::verify(tmp.path, head);
        INFO(describe(r));
        REQUIRE(r.problems.size() == 1);
        CHECK(r.problems[0].line == 7);
        CHECK(r.problems[0].what == "duplicate entry (seq 15 seen before)");
    }
    SECTION("a line no longer parses") {
        lines[3] = "15\tgarbage";
        write_lines(day1, lines);
        const auto r = AuditLog::verify(tmp.path, head);
        INFO(describe(r));
        REQUIRE(r.problems.size() >= 1);
        CHECK(r.problems[0].what == "malformed line");
        CHECK(r.problems[0].line == 4);
        CHECK(r.problems[0].seq == 15);
    }
    SECTION("the tail cut off: only the head kept elsewhere shows it") {
        auto day2 = lines_of(tmp.path / file(2));
        day2.resize(9); // seq 25..33 remain; 34..36 gone
        write_lines(tmp.path / file(2), day2);
        CHECK(AuditLog::verify(tmp.path).ok);
        const auto r = AuditLog::verify(tmp.path, head);
        INFO(describe(r));
        REQUIRE(r.problems.size() == 1);
        CHECK(r.problems[0].what ==
              "chain ends at seq 33 but the head recorded elsewhere is 36 (tail removed)");
        CHECK(r.problems[0].file == file(2));
        CHECK(r.problems[0].line == 9);
    }
    SECTION("a whole day file removed") {
        fs::remove(day1);
        const auto r = AuditLog::verify(tmp.path, head);
        INFO(describe(r));
        REQUIRE(r.problems.size() == 1);
        CHECK(r.problems[0].file == file(2));
        CHECK(r.problems[0].line == 1);
        CHECK(r.problems[0].seq == 25);
        CHECK(r.problems[0].what ==
              "entries missing (seq 25 follows 12: 12 entries); " + file(2) +
                  " starts here: was a file removed?");
    }
    SECTION("the first day file removed") {
        fs::remove(tmp.path / file(0));
        const auto r = AuditLog::verify(tmp.path, head);
        INFO(describe(r));
        REQUIRE(r.problems.size() == 1);
        CHECK(r.problems[0].what == "entries missing (the log starts at seq 13, not 1)");
    }
    SECTION("the last day file removed") {
        fs::remove(tmp.path / file(2));
        CHECK(AuditLog::verify(tmp.path).ok);
        const auto r = AuditLog::verify(tmp.path, head);
        REQUIRE(r.problems.size() == 1);
        CHECK(r.problems[0].what ==
              "chain ends at seq 24 but the head recorded elsewhere is 36 (tail removed)");
    }
    SECTION("a forged line appended, hashed without the chain") {
        const std::string body = "25\t2025-01-07T23:00:00.000Z\terase\trec-1-0\treason=forged";
        lines.push_back(body + "\t" + chain_hash("", body));
        write_lines(day1, lines);
        const auto r = AuditLog::verify(tmp.path);
        INFO(describe(r));
        REQUIRE(r.problems.size() >= 1);
        CHECK(r.problems[0].file == file(1));
        CHECK(r.problems[0].line == 13);
        CHECK(r.problems[0].what == "hash mismatch (entry edited)");
    }
    SECTION("an edit with the whole chain recomputed: only the head kept elsewhere shows it") {
        // The forger knows the rule and rewrites every hash from the edit on.
        std::string prev = split_tabs(lines_of(tmp.path / file(0)).back())[5];
        for (int d = 1; d < 3; ++d) {
            auto ls = lines_of(tmp.path / file(d));
            for (auto& l : ls) {
                std::string body = body_of(l);
                if (d == 1 && body.rfind("17\t", 0) == 0) body.replace(body.find("revs-bens"), 9, "housing");
                prev = chain_hash(prev, body);
                l = body + "\t" + prev;
            }
            write_lines(tmp.path / file(d), ls);
        }
        CHECK(AuditLog::verify(tmp.path).ok);
        const auto r = AuditLog::verify(tmp.path, head);
        INFO(describe(r));
        REQUIRE(r.problems.size() == 1);
        CHECK(r.problems[0].seq == 36);
        CHECK(r.problems[0].what == "entry 36 differs from the head recorded elsewhere (chain rewritten)");
    }
}

TEST_CASE("a torn last line is cut off on open and the chain continues") {
    TempDir tmp("sb-audit");
    const auto head = write_sample(tmp.path);
    const auto last = tmp.path / file(2);
    const auto intact = sbtest::read_file(last);

    std::string torn;
    SECTION("half a line") { torn = "37\t2025-01-08T12:00:00.000Z\tingest\trec-x\tsour"; }
    SECTION("zeros where the write never reached the disk, and a stray newline") {
        torn = std::string(100, '\0') + "\nce=verint\t";
    }
    { std::ofstream(last, std::ios::binary | std::ios::app) << torn; }
    CHECK_FALSE(AuditLog::verify(tmp.path).ok);

    std::vector<std::string> warnings;
    {
        AuditLog log(tmp.path, [&](std::string_view w) { warnings.emplace_back(w); });
        REQUIRE(warnings.size() == 1);
        CHECK_THAT(warnings[0], Catch::Contains(file(2)) && Catch::Contains("after seq 36") &&
                                    Catch::Contains(".torn"));
        CHECK(sbtest::read_file(last) == intact);
        CHECK(sbtest::read_file(tmp.path / (file(2) + ".torn")) == torn); // kept, not destroyed
        CHECK(log.head() == head);
        log.append(at(2, 13), Entry{kind::erase, "rec-0-0", {{"receipt", "del-1"}}});
        const auto r = log.sync();
        REQUIRE(r.ok());
        CHECK(r.head.seq == 37);
    }
    const auto r = AuditLog::verify(tmp.path);
    INFO(describe(r));
    CHECK(r.ok);
    CHECK(r.last.seq == 37);
}

TEST_CASE("a new day file holding only a torn line is emptied; the chain continues from the day before") {
    TempDir tmp("sb-audit");
    const auto head = write_sample(tmp.path);
    { std::ofstream(tmp.path / file(3), std::ios::binary) << "37\t2025-01-09T00:00:00.0"; }
    std::vector<std::string> warnings;
    {
        AuditLog log(tmp.path, [&](std::string_view w) { warnings.emplace_back(w); });
        REQUIRE(warnings.size() == 1);
        CHECK_THAT(warnings[0], Catch::Contains("no entry left"));
        CHECK(log.head() == head);
        log.append(at(2, 23), kind::ingest, "late", ""); // never back to day 2's file
        REQUIRE(log.sync().ok());
    }
    CHECK(lines_of(tmp.path / file(2)).size() == 12);
    CHECK(lines_of(tmp.path / file(3)).size() == 1);
    CHECK(AuditLog::verify(tmp.path).ok);
}

TEST_CASE("entries written ahead of a transaction that did not commit are set aside on recovery") {
    TempDir tmp("sb-audit");
    Head committed;
    {
        AuditLog log(tmp.path);
        for (int r = 0; r < 4; ++r) write_record(log, at(0, 9 + r), "rec-0-" + std::to_string(r));
        committed = log.sync().head; // what the store committed: entry 12
        REQUIRE(committed.seq == 12);
        // The next group: written ahead, then the crash before its commit.
        // It spans a midnight, so one day file is uncommitted as a whole.
        write_record(log, at(0, 23, 59), "rec-x");
        write_record(log, at(1, 0, 1), "rec-y");
        REQUIRE(log.sync().ok());
    }
    const auto day0 = sbtest::read_file(tmp.path / file(0));
    const auto lines0 = lines_of(tmp.path / file(0));
    REQUIRE(lines0.size() == 15);
    REQUIRE(lines_of(tmp.path / file(1)).size() == 3);

    std::vector<std::string> warnings;
    {
        AuditLog log(tmp.path, [&](std::string_view w) { warnings.emplace_back(w); });
        CHECK(log.cut_after(committed) == 6);
        REQUIRE(warnings.size() == 1);
        CHECK_THAT(warnings[0], Catch::Contains("removed 6 entries after entry 12") &&
                                    Catch::Contains(".uncommitted"));
        CHECK(log.head() == committed);
        CHECK(log.durable_head() == committed);
        CHECK(lines_of(tmp.path / file(0)).size() == 12);
        CHECK_FALSE(fs::exists(tmp.path / file(1)));
        // Kept, not destroyed: each file's uncommitted part beside it.
        CHECK(lines_of(tmp.path / (file(0) + ".uncommitted")).size() == 3);
        CHECK(lines_of(tmp.path / (file(1) + ".uncommitted")).size() == 3);
        CHECK(sbtest::read_file(tmp.path / file(0)) + sbtest::read_file(tmp.path / (file(0) + ".uncommitted")) ==
              day0);
        // The chain continues from the committed head, in a new day file.
        log.append(at(1, 0, 2), kind::ingest, "rec-x", "source=verint");
        REQUIRE(log.sync().ok());
        CHECK(log.head().seq == 13);
    }
    const auto r = AuditLog::verify(tmp.path);
    INFO(describe(r));
    CHECK(r.ok);
    CHECK(r.entries == 13);

    SECTION("nothing to cut: the trail ends at the committed head") {
        AuditLog log(tmp.path, [&](std::string_view w) { warnings.emplace_back(w); });
        const auto at_head = log.head();
        warnings.clear();
        CHECK(log.cut_after(at_head) == 0);
        CHECK(warnings.empty());
    }
    SECTION("a trail that ends before the committed head is left alone, with a warning") {
        AuditLog log(tmp.path, [&](std::string_view w) { warnings.emplace_back(w); });
        warnings.clear();
        CHECK(log.cut_after(Head{20, std::string(64, 'a')}) == 0);
        REQUIRE(warnings.size() == 1);
        CHECK_THAT(warnings[0], Catch::Contains("entries are missing"));
        CHECK(log.head().seq == 13);
    }
    SECTION("a head that differs from the trail's entry is not repaired") {
        AuditLog log(tmp.path);
        CHECK_THROWS_WITH(log.cut_after(Head{5, std::string(64, 'a')}),
                          Catch::Contains("entry 5 differs from the one the journal committed"));
        CHECK(lines_of(tmp.path / file(0)).size() == 12); // nothing changed
        CHECK(lines_of(tmp.path / file(1)).size() == 1);
        CHECK(log.head().seq == 13);
    }
}

TEST_CASE("reopening continues seq and chain, in the same file or the next day's") {
    TempDir tmp("sb-audit");
    Head head = write_sample(tmp.path);
    {
        AuditLog log(tmp.path);
        CHECK(log.head() == head);
        CHECK(log.durable_head() == head);
        CHECK(log.last_seq() == 36);
        CHECK(log.last_hash() == head.hash);
        write_record(log, at(2, 20), "rec-a"); // same day: same file
        write_record(log, at(3, 1), "rec-b");  // next day: new file
        head = log.sync().head;
    }
    CHECK(head.seq == 42);
    CHECK(lines_of(tmp.path / file(2)).size() == 15);
    CHECK(lines_of(tmp.path / file(3)).size() == 3);
    AuditLog reopened(tmp.path); // an empty buffer: nothing to sync on close
    CHECK(reopened.head() == head);
    const auto r = AuditLog::verify(tmp.path, head);
    INFO(describe(r));
    CHECK(r.ok);
    CHECK(r.entries == 42);
}

TEST_CASE("a late timestamp never sends an entry back to an earlier day's file") {
    TempDir tmp("sb-audit");
    {
        AuditLog log(tmp.path);
        log.append(at(1, 0, 0), kind::ingest, "a", "source=verint");
        log.append(at(0, 23, 59), kind::deliver, "b", "destination=x"); // a slow thread
        REQUIRE(log.sync().ok());
    }
    CHECK_FALSE(fs::exists(tmp.path / file(0)));
    const auto lines = lines_of(tmp.path / file(1));
    REQUIRE(lines.size() == 2);
    CHECK(split_tabs(lines[1])[1] == "2025-01-06T23:59:00.000Z"); // its own time is kept
    CHECK(AuditLog::verify(tmp.path).ok);
}

TEST_CASE("values are escaped so that an entry stays one line and round-trips") {
    TempDir tmp("sb-audit");
    const std::string nasty = "a\tb\nc\rd;e=f\\g\x01h\x7f" "caf\xc3\xa9 \xff\xc0\xaf end";
    {
        AuditLog log(tmp.path);
        log.append(at(0, 9), Entry{kind::disclose, "id\twith\ntabs", {{"fields", nasty}, {"purpose", "x"}}});
        log.append(at(0, 9), kind::deliver, "-", "note=line\nbreak\ttab\\;kept");
        REQUIRE(log.sync().ok());
    }
    const auto lines = lines_of(tmp.path / file(0));
    REQUIRE(lines.size() == 2);
    const auto f = split_tabs(lines[0]);
    REQUIRE(f.size() == 6);
    CHECK(f[3] == "id\\twith\\ntabs");
    CHECK(f[4] ==
          "fields=a\\tb\\nc\\rd\\;e=f\\\\g\\x01h\\x7f" "caf\xc3\xa9 \\xff\\xc0\\xaf end;purpose=x");
    CHECK(split_tabs(lines[1])[3] == "\\x2d"); // a record literally called "-"
    CHECK(split_tabs(lines[1])[4] == "note=line\\nbreak\\ttab\\;kept");

    const auto records = AuditLog::read_range(tmp.path, 1, 2);
    REQUIRE(records.size() == 2);
    CHECK(records[0].record_id == "id\twith\ntabs");
    CHECK(records[0].ts_ms == at(0, 9));
    const auto attrs = switchboard::audit::parse_detail(records[0].detail);
    REQUIRE(attrs.size() == 2);
    CHECK(attrs[0].first == "fields");
    CHECK(attrs[0].second == nasty);
    CHECK(attrs[1] == std::pair<std::string, std::string>("purpose", "x"));
    CHECK(records[1].record_id == "-");
    const auto fast = switchboard::audit::parse_detail(records[1].detail);
    REQUIRE(fast.size() == 1);
    CHECK(fast[0].second == "line\nbreak\ttab;kept");
    CHECK(AuditLog::verify(tmp.path).ok);

    std::string detail;
    switchboard::audit::append_attr(detail, "destination", "revs;bens");
    switchboard::audit::append_attr(detail, "attempt", "2");
    CHECK(detail == "destination=revs\\;bens;attempt=2");
    CHECK(detail == switchboard::audit::format_detail({{"destination", "revs;bens"}, {"attempt", "2"}}));
}

TEST_CASE("any bytes in a value round-trip and never break the line") {
    // Every length around the 8-byte steps of the scanner, with a special
    // byte at every position, plus random bytes.
    std::vector<std::string> inputs;
    const std::string specials[] = {"\t", "\n", "\r", ";", "\\", "\x7f", "\x01", "\xc3\xa9",
                                    "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xff", "\xc3", "\xed\xa0\x80"};
    for (std::size_t len = 0; len < 20; ++len)
        for (std::size_t pos = 0; pos <= len; ++pos)
            for (const auto& sp : specials)
                inputs.push_back(std::string(pos, 'a') + sp + std::string(len - pos, 'b'));
    std::uint64_t x = 88172645463325252ULL; // xorshift: reproducible
    for (int i = 0; i < 2000; ++i) {
        std::string r;
        for (int k = 0, n = i % 50; k < n; ++k) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            r += static_cast<char>(x & 0xff);
        }
        inputs.push_back(r);
    }
    std::size_t bad = 0;
    for (const auto& in : inputs) {
        std::string detail;
        switchboard::audit::append_attr(detail, "v", in);
        const bool one_line = std::all_of(detail.begin(), detail.end(), [](char c) {
            return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
        });
        const auto back = switchboard::audit::parse_detail(detail);
        if (!one_line || back.size() != 1 || back[0].second != in) {
            if (bad++ == 0) UNSCOPED_INFO("first failure: " << detail);
        }
    }
    CHECK(inputs.size() > 4000);
    CHECK(bad == 0);
}

TEST_CASE("entries are read back by record id and by seq range") {
    TempDir tmp("sb-audit");
    write_sample(tmp.path);
    const auto mine = AuditLog::read_records(tmp.path, {"rec-1-2", "rec-2-0", "unknown"});
    REQUIRE(mine.size() == 6);
    CHECK(mine[0].record_id == "rec-1-2");
    CHECK(mine[0].kind == "ingest");
    CHECK(mine[0].seq == 19);
    CHECK(mine[3].record_id == "rec-2-0");
    CHECK(mine[5].kind == "deliver");
    CHECK(mine[5].ts_ms == at(2, 9) + 2);

    const auto range = AuditLog::read_range(tmp.path, 11, 26);
    REQUIRE(range.size() == 16);
    for (std::size_t i = 0; i < range.size(); ++i) CHECK(range[i].seq == 11 + i);
    CHECK(AuditLog::read_range(tmp.path, 40, 50).empty());
    CHECK(AuditLog::read_range(tmp.path, 36, 36).size() == 1);
}

TEST_CASE("shared attributes are written once per file and read back in place") {
    TempDir tmp("sb-audit");
    auto shared = std::make_shared<const std::string>("purpose=x;sent=a:keep");
    auto same_text = std::make_shared<const std::string>(*shared); // another string, the same set
    auto other = std::make_shared<const std::string>("purpose=y;sent=b:hash");
    {
        AuditLog log(tmp.path);
        log.append_shared(at(0, 9), kind::disclose, "rec-1", "destination=d;seq=1", shared);
        log.append_shared(at(0, 9), kind::disclose, "rec-2", "destination=d;seq=2", shared);
        log.append_shared(at(0, 9), kind::disclose, "rec-3", "destination=d;seq=3", same_text);
        log.append_shared(at(0, 9), kind::disclose, "rec-3", "destination=e;seq=1", other);
        // Taken back (a transaction that failed), then again: the set too.
        const auto m = log.mark();
        log.append_shared(at(0, 10), kind::disclose, "rec-4", "destination=d;seq=4", shared);
        log.rollback(m);
        log.append_shared(at(0, 10), kind::disclose, "rec-4", "destination=d;seq=4", shared);
        // The next day's file defines it again.
        log.append_shared(at(1, 9), kind::disclose, "rec-5", "destination=d;seq=5", shared);
        log.append(at(1, 9), kind::deliver, "rec-5", "destination=d;seq=5");
        REQUIRE(log.sync().ok());
    }
    // By hand: printf '%s' 'purpose=x;sent=a:keep' | sha256sum | cut -c1-16
    const std::string id = "8ba76beb9022b6d6";
    const auto day0 = lines_of(tmp.path / "audit-2025-01-06.log");
    REQUIRE(day0.size() == 8);
    CHECK(split_tabs(day0[0])[2] == "set");
    CHECK(split_tabs(day0[0])[3] == "-");
    CHECK(split_tabs(day0[0])[4] == "set=" + id + ";purpose=x;sent=a:keep");
    CHECK(split_tabs(day0[1])[4] == "destination=d;seq=1;set=" + id);
    CHECK(split_tabs(day0[3])[4] == "destination=d;seq=3;set=" + id); // no second set entry
    CHECK(split_tabs(day0[4])[2] == "set"); // the other set
    CHECK(split_tabs(day0[6])[2] == "set"); // after the rollback
    CHECK(split_tabs(day0[6])[4] == "set=" + id + ";purpose=x;sent=a:keep");
    const auto day1 = lines_of(tmp.path / "audit-2025-01-07.log");
    REQUIRE(day1.size() == 3);
    CHECK(split_tabs(day1[0])[4] == "set=" + id + ";purpose=x;sent=a:keep");
    CHECK(AuditLog::verify(tmp.path).ok);

    // Readers see each entry whole.
    const auto mine = AuditLog::read_records(tmp.path, {"rec-3", "rec-5"});
    REQUIRE(mine.size() == 4);
    CHECK(mine[0].detail == "destination=d;seq=3;purpose=x;sent=a:keep");
    CHECK(mine[1].detail == "destination=e;seq=1;purpose=y;sent=b:hash");
    CHECK(mine[2].detail == "destination=d;seq=5;purpose=x;sent=a:keep");
    CHECK(mine[3].detail == "destination=d;seq=5");
    const auto range = AuditLog::read_range(tmp.path, 8, 11);
    REQUIRE(range.size() == 4);
    CHECK(range[0].detail == "destination=d;seq=4;purpose=x;sent=a:keep");
    CHECK(range[1].kind == "set");
    CHECK(range[2].detail == "destination=d;seq=5;purpose=x;sent=a:keep");
}

TEST_CASE("more distinct shared attributes than the log remembers are still each defined before use") {
    // 5,000 sets (the log remembers 4,096, then starts again), each used
    // twice, the second time through another string with the same text.
    TempDir tmp("sb-audit");
    constexpr int n = 5000;
    {
        AuditLog log(tmp.path);
        for (int round = 0; round < 2; ++round)
            for (int i = 0; i < n; ++i) {
                auto shared = std::make_shared<const std::string>("purpose=p" + std::to_string(i) + ";sent=a:keep");
                log.append_shared(at(0, 9), kind::disclose, "rec-" + std::to_string(i),
                                  "destination=d;seq=" + std::to_string(round * n + i + 1), shared);
            }
        REQUIRE(log.sync().ok());
    }
    const auto r = AuditLog::verify(tmp.path);
    for (const auto& p : r.problems) UNSCOPED_INFO(p.line << " " << p.what);
    CHECK(r.ok);
    CHECK(r.entries <= 4 * n); // at most one set entry per use (here, cycling through more than it remembers)
    const auto mine = AuditLog::read_records(tmp.path, {"rec-0", "rec-4999"});
    REQUIRE(mine.size() == 4);
    CHECK(mine[0].detail == "destination=d;seq=1;purpose=p0;sent=a:keep");
    CHECK(mine[1].detail == "destination=d;seq=5000;purpose=p4999;sent=a:keep");
    CHECK(mine[2].detail == "destination=d;seq=5001;purpose=p0;sent=a:keep");
    CHECK(mine[3].detail == "destination=d;seq=10000;purpose=p4999;sent=a:keep");
}

TEST_CASE("verify reports a set reference with no set entry before it in the file, and a set entry "
          "whose id does not match") {
    TempDir tmp("sb-audit");
    {
        AuditLog log(tmp.path);
        // Written by hand with a valid chain: only the set check can see these.
        log.append(at(0, 9), kind::disclose, "rec-1", "destination=d;seq=1;set=8ba76beb9022b6d6");
        log.append(at(0, 9), kind::set, "", "set=0123456789abcdef;purpose=x;sent=a:keep");
        log.append(at(0, 9), kind::set, "", "set=8ba76beb9022b6d6;purpose=x;sent=a:keep");
        log.append(at(0, 9), kind::disclose, "rec-2", "destination=d;seq=2;set=8ba76beb9022b6d6");
        // The next day's file must define it again.
        log.append(at(1, 9), kind::disclose, "rec-3", "destination=d;seq=3;set=8ba76beb9022b6d6");
        REQUIRE(log.sync().ok());
    }
    const auto r = AuditLog::verify(tmp.path);
    CHECK_FALSE(r.ok);
    REQUIRE(r.problems.size() == 3);
    CHECK(r.problems[0].seq == 1);
    CHECK(r.problems[0].what.find("refers to set 8ba76beb9022b6d6, which no set entry earlier in this file defines") !=
          std::string::npos);
    CHECK(r.problems[1].seq == 2);
    CHECK(r.problems[1].what.find("the id does not match its attributes") != std::string::npos);
    CHECK(r.problems[2].seq == 5);
    CHECK(r.problems[2].file == "audit-2025-01-07.log");
}

TEST_CASE("appends from several threads keep one valid chain") {
    TempDir tmp("sb-audit");
    constexpr int threads = 8, per_thread = 5000;
    Head last;
    {
        AuditLog log(tmp.path);
        std::vector<std::thread> pool;
        std::atomic<bool> sync_failed{false};
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&, t] {
                const std::string dest = "dest-" + std::to_string(t);
                std::string detail;
                for (int i = 0; i < per_thread; ++i) {
                    detail.clear();
                    switchboard::audit::append_attr(detail, "destination", dest);
                    const std::string n = std::to_string(i);
                    switchboard::audit::append_attr(detail, "attempt", n);
                    // Spans midnight: the day files roll over under concurrency.
                    log.append(at(0, 23, 59) + i * 20, kind::deliver, n, detail);
                    if (i % 500 == 499 && !log.sync().ok()) sync_failed = true;
                }
            });
        for (auto& th : pool) th.join();
        CHECK_FALSE(sync_failed);
        last = log.sync().head;
    }
    CHECK(last.seq == threads * per_thread);
    CHECK(fs::exists(tmp.path / file(1)));
    const auto r = AuditLog::verify(tmp.path, last);
    INFO(describe(r));
    CHECK(r.ok);
    CHECK(r.entries == threads * per_thread);
}

TEST_CASE("a failed write is sticky: later syncs report it and nothing more is buffered") {
    TempDir tmp("sb-audit");
    AuditLog log(tmp.path, [](std::string_view) {});
    log.append(at(0, 9), kind::ingest, "a", "");
    REQUIRE(log.sync().ok());
    fs::create_directory(tmp.path / file(1)); // the next day's file cannot be opened for writing
    log.append(at(1, 9), kind::ingest, "b", "");
    const auto r = log.sync();
    CHECK_FALSE(r.ok());
    CHECK(r.head.seq == 1);
    log.append(at(1, 10), kind::ingest, "c", "");
    CHECK(log.last_seq() == 2);
    CHECK(log.sync().error == r.error);
    CHECK(log.durable_head().seq == 1);
}

TEST_CASE("append cost", "[.bench]") {
    TempDir tmp("sb-audit-bench");
    constexpr int n = 1'000'000;
    constexpr int batch = 10'000; // one group commit
    // ~210 bytes of detail: what a disclosure entry carries for a typical profile.
    const std::string fields =
        "citizen.name:keep,citizen.address.postcode:generalise,contact.phone:mask,"
        "contact.email:hash,query.category:keep,content.text:redact";
    using clock = std::chrono::steady_clock;
    auto ns = [](clock::time_point a, clock::time_point b) {
        return std::chrono::duration<double, std::nano>(b - a).count();
    };
    double build = 0, append = 0, sync = 0, entry = 0;
    std::size_t bytes = 0;
    {
        AuditLog log(tmp.path / "fast");
        std::vector<std::string> ids(batch), details(batch);
        for (int b = 0; b < n / batch; ++b) {
            const auto t0 = clock::now();
            for (int i = 0; i < batch; ++i) {
                ids[i] = "rec-" + std::to_string(1'000'000 + b * batch + i);
                details[i].clear();
                switchboard::audit::append_attr(details[i], "destination", "revs-bens");
                switchboard::audit::append_attr(details[i], "purpose", "council_tax_query");
                switchboard::audit::append_attr(details[i], "profile", "revs-bens@3");
                switchboard::audit::append_attr(details[i], "fields", fields);
                switchboard::audit::append_attr(details[i], "attempt", "1");
            }
            const auto t1 = clock::now();
            for (int i = 0; i < batch; ++i)
                log.append(at(0, 9) + b * 100 + i / 100, kind::disclose, ids[i], details[i]);
            const auto t2 = clock::now();
            REQUIRE(log.sync().ok());
            const auto t3 = clock::now();
            build += ns(t0, t1);
            append += ns(t1, t2);
            sync += ns(t2, t3);
        }
        bytes = fs::file_size(tmp.path / "fast" / file(0));
    }
    {
        AuditLog log(tmp.path / "entry");
        for (int b = 0; b < n / batch; ++b) {
            const auto t0 = clock::now();
            for (int i = 0; i < batch; ++i)
                log.append(at(0, 9) + b * 100 + i / 100,
                           Entry{kind::disclose, "rec-" + std::to_string(1'000'000 + b * batch + i),
                                 {{"destination", "revs-bens"},
                                  {"purpose", "council_tax_query"},
                                  {"profile", "revs-bens@3"},
                                  {"fields", fields},
                                  {"attempt", "1"}}});
            entry += ns(t0, clock::now());
            REQUIRE(log.sync().ok());
        }
    }
    const auto t0 = clock::now();
    const auto r = AuditLog::verify(tmp.path / "fast");
    const double verify = ns(t0, clock::now());
    REQUIRE(r.ok);
    WARN("per entry (" << bytes / n << " bytes/line, " << n << " entries): append (fast path) "
         << append / n << " ns; append (Entry, incl. building it) " << entry / n
         << " ns; building the detail with append_attr " << build / n << " ns; write+fdatasync "
         << "per " << batch << " entries " << sync / n << " ns; verify " << verify / n << " ns");
}
