#include "audit/audit_log.hpp"

// SHA256_Init and the rest (class Sha256 says why not EVP).
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <map>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

namespace switchboard::audit {
namespace {

constexpr std::int64_t ms_per_day = 86'400'000;
// Clamp times to 0000..9999 so the time field is always 24 characters.
constexpr std::int64_t max_ms = 253'402'300'799'999; // 9999-12-31T23:59:59.999Z
constexpr std::size_t hash_len = 64;
constexpr std::size_t set_id_len = 16;
constexpr std::string_view set_attr = "set=";

std::int64_t clamp_ms(std::int64_t ms) { return std::clamp<std::int64_t>(ms, 0, max_ms); }

// Howard Hinnant's civil calendar algorithms: no locale, no time zone, no libc.
struct Civil {
    std::int64_t y;
    unsigned m, d;
};

Civil civil_from_days(std::int64_t z) {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const auto doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    const unsigned d = doy - (153 * mp + 2) / 5 + 1;
    const unsigned m = mp < 10 ? mp + 3 : mp - 9;
    return {static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2), m, d};
}

std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const auto yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

void put_digits(char* p, unsigned v, int n) {
    for (int i = n - 1; i >= 0; --i) {
        p[i] = static_cast<char>('0' + v % 10);
        v /= 10;
    }
}

// "YYYY-MM-DD"
void format_day(char* out, std::int64_t day) {
    const Civil c = civil_from_days(day);
    put_digits(out, static_cast<unsigned>(c.y), 4);
    out[4] = '-';
    put_digits(out + 5, c.m, 2);
    out[7] = '-';
    put_digits(out + 8, c.d, 2);
}

std::string file_name(std::int64_t day) {
    char date[10];
    format_day(date, day);
    return "audit-" + std::string(date, sizeof date) + ".log";
}

bool all_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

unsigned to_uint(std::string_view s) {
    unsigned v = 0;
    for (char c : s) v = v * 10 + static_cast<unsigned>(c - '0');
    return v;
}

// "YYYY-MM-DD" -> day number, with real month/day ranges.
std::optional<std::int64_t> parse_day(std::string_view s) {
    if (s.size() != 10 || s[4] != '-' || s[7] != '-' || !all_digits(s.substr(0, 4)) ||
        !all_digits(s.substr(5, 2)) || !all_digits(s.substr(8, 2)))
        return std::nullopt;
    const unsigned y = to_uint(s.substr(0, 4)), m = to_uint(s.substr(5, 2)),
                   d = to_uint(s.substr(8, 2));
    if (m < 1 || m > 12 || d < 1 || d > 31) return std::nullopt;
    const std::int64_t day = days_from_civil(y, m, d);
    if (civil_from_days(day).d != d) return std::nullopt; // 31 April and the like
    return day;
}

std::optional<std::int64_t> parse_file_name(std::string_view name) {
    if (name.size() != 20 || name.substr(0, 6) != "audit-" || name.substr(16) != ".log")
        return std::nullopt;
    return parse_day(name.substr(6, 10));
}

// "YYYY-MM-DDTHH:MM:SS.mmmZ" -> Unix ms.
std::optional<std::int64_t> parse_time(std::string_view t) {
    if (t.size() != 24 || t[10] != 'T' || t[13] != ':' || t[16] != ':' || t[19] != '.' ||
        t[23] != 'Z' || !all_digits(t.substr(11, 2)) || !all_digits(t.substr(14, 2)) ||
        !all_digits(t.substr(17, 2)) || !all_digits(t.substr(20, 3)))
        return std::nullopt;
    const auto day = parse_day(t.substr(0, 10));
    const unsigned h = to_uint(t.substr(11, 2)), mi = to_uint(t.substr(14, 2)),
                   s = to_uint(t.substr(17, 2)), ms = to_uint(t.substr(20, 3));
    if (!day || h > 23 || mi > 59 || s > 59) return std::nullopt;
    return *day * ms_per_day + ((h * 60 + mi) * 60 + s) * std::int64_t{1000} + ms;
}

bool is_lower_hex(std::string_view s) {
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// ---------------------------------------------------------------- escaping

// Escaping modes: Full for record ids and values (also '\' and ';', so values
// round-trip and details split); LineOnly for a detail the caller formatted.
enum class Esc { Full, LineOnly };

constexpr std::uint64_t ones = 0x0101010101010101ULL;
constexpr std::uint64_t highs = 0x8080808080808080ULL;

// Bit tricks (Sean Anderson's "bithacks"): nonzero iff some byte of x is < n
// (n <= 128), or is zero. Exact as a yes/no answer, which is all we need.
constexpr std::uint64_t has_less(std::uint64_t x, std::uint64_t n) {
    return (x - ones * n) & ~x & highs;
}
constexpr std::uint64_t has_zero(std::uint64_t x) { return (x - ones) & ~x & highs; }

// Any byte that is a control byte, DEL or non-ASCII (or '\' ';' in Full mode).
// Eight bytes at a time: the common case (plain ASCII ids and names) is a copy.
constexpr std::uint64_t special_word(std::uint64_t x, Esc mode) {
    std::uint64_t r = has_less(x, 0x20) | ((((x & ~highs) + ones) | x) & highs);
    if (mode == Esc::Full) r |= has_zero(x ^ (ones * '\\')) | has_zero(x ^ (ones * ';'));
    return r;
}

bool special_byte(unsigned char c, Esc mode) {
    return c < 0x20 || c >= 0x7f || (mode == Esc::Full && (c == '\\' || c == ';'));
}

std::size_t clean_prefix(std::string_view s, std::size_t from, Esc mode) {
    std::size_t i = from;
    for (; i + 8 <= s.size(); i += 8) {
        std::uint64_t w;
        std::memcpy(&w, s.data() + i, 8);
        if (special_word(w, mode)) break;
    }
    while (i < s.size() && !special_byte(static_cast<unsigned char>(s[i]), mode)) ++i;
    return i;
}

// Length of the valid UTF-8 sequence starting at s[i] (a byte >= 0x80), or 0.
std::size_t utf8_len(std::string_view s, std::size_t i) {
    auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned c = at(i);
    // Lengths and second-byte ranges from RFC 3629: no overlong forms, no
    // UTF-16 surrogates, nothing above U+10FFFF.
    const std::size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n == 0) return 0;
    const unsigned lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
    const unsigned hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
    if (i + n > s.size() || at(i + 1) < lo || at(i + 1) > hi) return 0;
    for (std::size_t k = 2; k < n; ++k)
        if (at(i + k) < 0x80 || at(i + k) > 0xbf) return 0;
    return n;
}

void append_escaped(std::string& out, std::string_view s, Esc mode) {
    static constexpr char hex[] = "0123456789abcdef";
    std::size_t i = 0;
    while (i < s.size()) {
        const std::size_t clean = clean_prefix(s, i, mode);
        out.append(s.data() + i, clean - i);
        i = clean;
        if (i == s.size()) break;
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            if (const std::size_t n = utf8_len(s, i)) {
                out.append(s.data() + i, n);
                i += n;
                continue;
            }
        }
        switch (c) {
        case '\\': out += "\\\\"; break;
        case ';': out += "\\;"; break;
        case '\t': out += "\\t"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        default: {
            const char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            out.append(e, 4);
        }
        }
        ++i;
    }
}

// ---------------------------------------------------------------- hashing

// SHA-256 through OpenSSL's SHA256_* functions (deprecated in 3.0, still
// there, and on the CPU's SHA extensions): a line's digest with no
// allocation. The EVP interface allocates a context for each digest (3.0
// makes its provider context anew at every init), which cost a third as
// much again as hashing a 200-byte line, on the journal's writer thread.
class Sha256 {
public:
    // out (64 chars) = hex(SHA-256(prev "\n" body))
    void chain(std::string_view prev, std::string_view body, char* out) {
        hex_digest({prev, "\n", body}, out, hash_len);
    }
    std::string chain(std::string_view prev, std::string_view body) {
        std::string out(hash_len, '0');
        chain(prev, body, out.data());
        return out;
    }
    // The id of a set of shared attributes: the first 16 hex digits of
    // SHA-256(attributes, as written) (AuditLog::append_shared).
    std::string set_id(std::string_view shared) {
        std::string out(set_id_len, '0');
        hex_digest({shared}, out.data(), set_id_len);
        return out;
    }

private:
    // out (`digits` chars, at most 64) = the first digits of
    // hex(SHA-256(the parts, one after the other)).
    void hex_digest(std::initializer_list<std::string_view> parts, char* out, std::size_t digits) {
        unsigned char digest[SHA256_DIGEST_LENGTH];
        SHA256_CTX ctx;
        bool ok = SHA256_Init(&ctx) == 1;
        for (std::string_view part : parts) ok = ok && SHA256_Update(&ctx, part.data(), part.size()) == 1;
        if (!(ok && SHA256_Final(digest, &ctx) == 1)) throw std::runtime_error("audit: SHA-256 failed");
        static constexpr char hex[] = "0123456789abcdef";
        for (std::size_t i = 0; i < digits / 2; ++i) {
            out[2 * i] = hex[digest[i] >> 4];
            out[2 * i + 1] = hex[digest[i] & 15];
        }
    }
};

// ---------------------------------------------------------------- lines

struct LineView {
    std::uint64_t seq = 0;
    std::string_view time, kind, record_id, detail, hash;
    std::string_view body; // what the hash covers: the line before "\t<hash>"
};

bool valid_kind(std::string_view s) {
    if (s.empty() || s.size() > 48 || s[0] < 'a' || s[0] > 'z') return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    });
}

std::optional<std::uint64_t> parse_seq(std::string_view s) {
    if (!all_digits(s) || s.size() > 20 || (s[0] == '0')) return std::nullopt;
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

bool parse_line(std::string_view line, LineView& v) {
    for (char c : line)
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t') return false;
    std::array<std::string_view, 6> f;
    std::size_t start = 0;
    for (std::size_t k = 0; k < 6; ++k) {
        const std::size_t tab = line.find('\t', start);
        if ((k < 5) == (tab == std::string_view::npos)) return false; // too few or too many
        f[k] = line.substr(start, k < 5 ? tab - start : std::string_view::npos);
        start = tab + 1;
    }
    const auto seq = parse_seq(f[0]);
    if (!seq || !parse_time(f[1]) || !valid_kind(f[2]) || f[3].empty() ||
        f[5].size() != hash_len || !is_lower_hex(f[5]))
        return false;
    v.seq = *seq;
    v.time = f[1];
    v.kind = f[2];
    v.record_id = f[3];
    v.detail = f[4];
    v.hash = f[5];
    v.body = line.substr(0, line.size() - hash_len - 1);
    return true;
}

// For a line that does not parse: its seq and hash if they are recognisable,
// so that one damaged entry does not make every later link look broken.
std::optional<std::uint64_t> lenient_seq(std::string_view line) {
    return parse_seq(line.substr(0, line.find('\t')));
}
std::optional<std::string_view> lenient_hash(std::string_view line) {
    const std::size_t tab = line.rfind('\t');
    if (tab == std::string_view::npos) return std::nullopt;
    const auto h = line.substr(tab + 1);
    if (h.size() != hash_len || !is_lower_hex(h)) return std::nullopt;
    return h;
}

Record to_record(const LineView& v) {
    Record r;
    r.seq = v.seq;
    r.ts_ms = parse_time(v.time).value_or(0);
    r.kind = std::string(v.kind);
    r.record_id = v.record_id == "-" ? std::string() : unescape(v.record_id);
    r.detail = std::string(v.detail);
    r.hash = std::string(v.hash);
    return r;
}

bool is_set_id(std::string_view id) {
    return id.size() == set_id_len && std::all_of(id.begin(), id.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
}

// The id a detail refers to with its last attribute "set=<id>" (what
// append_shared writes), or empty.
std::string_view set_reference(std::string_view detail) {
    constexpr std::size_t n = set_attr.size() + set_id_len;
    if (detail.size() < n) return {};
    const std::size_t at = detail.size() - n;
    if (at > 0 && detail[at - 1] != ';') return {};
    if (detail.substr(at, set_attr.size()) != set_attr) return {};
    const std::string_view id = detail.substr(at + set_attr.size());
    return is_set_id(id) ? id : std::string_view();
}

// A set entry's "set=<id>;<shared>": the id and the shared attributes.
bool split_set(std::string_view detail, std::string_view& id, std::string_view& shared) {
    if (detail.substr(0, set_attr.size()) != set_attr) return false;
    id = detail.substr(set_attr.size(), set_id_len);
    if (!is_set_id(id) || detail.size() < set_attr.size() + set_id_len + 2 ||
        detail[set_attr.size() + set_id_len] != ';')
        return false;
    shared = detail.substr(set_attr.size() + set_id_len + 1);
    return true;
}

// Reading back: remembers the set entries seen so far and puts their
// attributes back in place of set=<id> in the entries that refer to them.
class SetExpander {
public:
    // True for a set entry (remembered; not an entry about a record).
    bool see(const LineView& v) {
        if (v.kind != kind::set.view()) return false;
        std::string_view id, shared;
        if (split_set(v.detail, id, shared)) sets_.insert_or_assign(std::string(id), std::string(shared));
        return true;
    }
    void expand(Record& r) const {
        const std::string_view id = set_reference(r.detail);
        if (id.empty()) return;
        auto it = sets_.find(std::string(id));
        if (it == sets_.end()) return; // verify reports it
        r.detail.resize(r.detail.size() - set_attr.size() - set_id_len); // keeps the ';' before it
        if (r.detail.empty()) r.detail = it->second;
        else r.detail += it->second;
    }

private:
    std::unordered_map<std::string, std::string> sets_;
};

// ---------------------------------------------------------------- files

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

[[noreturn]] void fail(const std::filesystem::path& p, std::string_view what, int err) {
    throw std::runtime_error("audit: " + p.string() + ": " + std::string(what) + ": " +
                             errno_text(err));
}

struct Fd {
    int fd = -1;
    Fd() = default;
    explicit Fd(int f) : fd(f) {}
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
};

struct LogFile {
    std::int64_t day;
    std::string name;
};

// The day files in name order (which is day order, which is seq order).
std::vector<LogFile> list_files(const std::filesystem::path& dir) {
    std::vector<LogFile> files;
    std::error_code ec;
    for (const auto& de : std::filesystem::directory_iterator(dir, ec)) {
        const std::string name = de.path().filename().string();
        if (const auto day = parse_file_name(name)) files.push_back({*day, name});
    }
    std::sort(files.begin(), files.end(),
              [](const LogFile& a, const LogFile& b) { return a.day < b.day; });
    return files;
}

int write_all(int fd, const char* p, std::size_t n) {
    while (n > 0) {
        const ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return 0;
}

int fsync_dir(const std::filesystem::path& dir) {
    Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d.fd < 0) return errno;
    return ::fsync(d.fd) == 0 ? 0 : errno;
}

// Lines of a file, read in large chunks (day files can be gigabytes).
class LineReader {
public:
    explicit LineReader(const std::filesystem::path& p)
        : fd_(::open(p.c_str(), O_RDONLY | O_CLOEXEC)) {
        if (fd_.fd < 0) error_ = errno;
    }
    int error() const { return error_; }

    enum class Got { Line, Torn, End };
    // A line without its '\n'; Torn: the last bytes of the file had none.
    Got next(std::string_view& line) {
        for (;;) {
            const char* nl = static_cast<const char*>(
                std::memchr(buf_.data() + pos_, '\n', buf_.size() - pos_));
            if (nl) {
                line = std::string_view(buf_.data() + pos_, static_cast<std::size_t>(nl - buf_.data()) - pos_);
                pos_ = static_cast<std::size_t>(nl - buf_.data()) + 1;
                return Got::Line;
            }
            if (eof_ || error_) {
                if (pos_ == buf_.size()) return Got::End;
                line = std::string_view(buf_.data() + pos_, buf_.size() - pos_);
                pos_ = buf_.size();
                return Got::Torn;
            }
            buf_.erase(0, pos_);
            pos_ = 0;
            const std::size_t have = buf_.size();
            buf_.resize(have + chunk);
            ssize_t r;
            do r = ::read(fd_.fd, buf_.data() + have, chunk);
            while (r < 0 && errno == EINTR);
            if (r < 0) {
                error_ = errno;
                r = 0;
            }
            buf_.resize(have + static_cast<std::size_t>(r));
            if (r == 0) eof_ = true;
        }
    }

private:
    static constexpr std::size_t chunk = 1 << 20;
    Fd fd_;
    std::string buf_;
    std::size_t pos_ = 0;
    bool eof_ = false;
    int error_ = 0;
};

// ---------------------------------------------------------------- verify

class Verifier {
public:
    explicit Verifier(std::optional<Head> head) : head_(std::move(head)) {}

    void start_file(std::size_t index, std::string name) {
        file_index_ = index;
        file_ = std::move(name);
        line_ = 0;
        ++result_.files;
        sets_.clear(); // a set is defined in each file that uses it
    }

    void line(std::string_view text) {
        ++line_;
        LineView v;
        if (parse_line(text, v)) {
            ++result_.entries;
            observe(v.seq, v.hash, v.body, true);
            check_sets(v);
            return;
        }
        const auto seq = lenient_seq(text);
        const auto hash = lenient_hash(text);
        problem(seq.value_or(0), "malformed line");
        if (seq && hash) observe(*seq, *hash, {}, false);
    }

    void torn(std::string_view text) {
        ++line_;
        problem(lenient_seq(text).value_or(0),
                "incomplete last line (no newline at the end: torn write, or still being "
                "written)");
    }

    void unreadable(int err) { problem(0, "cannot read: " + errno_text(err)); }

    AuditLog::VerifyResult finish() {
        for (const auto& [lo, g] : gaps_) {
            const std::uint64_t n = g.hi - lo + 1;
            std::string what;
            if (lo == 1)
                what = "entries missing (the log starts at seq " + std::to_string(g.hi + 1) +
                       ", not 1)";
            else
                what = std::string(n == 1 ? "entry missing" : "entries missing") + " (seq " +
                       std::to_string(g.hi + 1) + " follows " + std::to_string(lo - 1) +
                       (n == 1 ? "" : ": " + std::to_string(n) + " entries") + ")";
            if (g.at.line == 1 && g.at.file_index > 0)
                what += "; " + g.at.file + " starts here: was a file removed?";
            add(g.at, g.hi + 1, std::move(what));
        }
        if (head_ && head_->seq > 0) {
            if (result_.last.seq < head_->seq)
                add(here(), result_.last.seq,
                    "chain ends at seq " + std::to_string(result_.last.seq) +
                        " but the head recorded elsewhere is " + std::to_string(head_->seq) +
                        " (tail removed)");
            else if (head_seen_ && head_seen_->first != head_->hash)
                add(head_seen_->second, head_->seq,
                    "entry " + std::to_string(head_->seq) +
                        " differs from the head recorded elsewhere (chain rewritten)");
        }
        std::stable_sort(problems_.begin(), problems_.end(), [](const P& a, const P& b) {
            return std::pair(a.at.file_index, a.at.line) < std::pair(b.at.file_index, b.at.line);
        });
        for (auto& p : problems_) {
            if (result_.problems.size() == max_problems) {
                result_.problems.push_back(
                    {0, "", 0, std::to_string(problems_.size() - max_problems) + " more problems"});
                break;
            }
            result_.problems.push_back({p.seq, p.at.file, p.at.line, std::move(p.what)});
        }
        result_.ok = result_.problems.empty();
        return std::move(result_);
    }

private:
    // Shared attributes (AuditLog::append_shared): a set entry's id is that
    // of its attributes, and a reference names a set entry earlier in the
    // same file.
    void check_sets(const LineView& v) {
        if (v.kind == kind::set.view()) {
            std::string_view id, shared;
            if (!split_set(v.detail, id, shared))
                problem(v.seq, "set entry without \"set=<16 hex digits>;<attributes>\"");
            else if (sha_.set_id(shared) != id)
                problem(v.seq, "set entry " + std::string(id) + ": the id does not match its attributes");
            else
                sets_.insert(std::string(id));
            return;
        }
        const std::string_view id = set_reference(v.detail);
        if (!id.empty() && !sets_.count(std::string(id)))
            problem(v.seq, "refers to set " + std::string(id) + ", which no set entry earlier in this file defines");
    }

    static constexpr std::size_t max_problems = 1000;
    // Hashes of recent entries by seq, so a link can be checked when entries
    // arrive slightly out of order (two swapped lines) without holding all.
    static constexpr std::size_t window = 4096;

    struct Loc {
        std::size_t file_index = 0;
        std::string file;
        std::size_t line = 0;
    };
    struct P {
        Loc at;
        std::uint64_t seq;
        std::string what;
    };
    struct Gap { // seqs lo..hi not seen (yet), first noticed at `at`
        std::uint64_t hi;
        Loc at;
    };
    struct Pending { // an entry whose predecessor had not been seen when it came
        std::uint64_t seq;
        std::string hash, body;
        Loc at;
    };
    struct Slot {
        std::uint64_t seq = 0;
        std::array<char, hash_len> hash{};
    };

    std::set<std::string, std::less<>> sets_; // ids of the set entries of this file so far

    Loc here() const { return {file_index_, file_, line_}; }
    void add(Loc at, std::uint64_t seq, std::string what) {
        problems_.push_back({std::move(at), seq, std::move(what)});
    }
    void problem(std::uint64_t seq, std::string what) { add(here(), seq, std::move(what)); }

    std::map<std::uint64_t, Gap>::iterator find_gap(std::uint64_t seq) {
        auto it = gaps_.upper_bound(seq);
        if (it == gaps_.begin()) return gaps_.end();
        --it;
        return seq <= it->second.hi ? it : gaps_.end();
    }

    const char* known_hash(std::uint64_t seq) const {
        if (seq == 0) return genesis_hash.data();
        const Slot& s = ring_[seq % window];
        return s.seq == seq ? s.hash.data() : nullptr;
    }

    void check_link(std::uint64_t seq, std::string_view hash, std::string_view body,
                    std::string_view prev, const Loc& at) {
        sha_.chain(prev, body, computed_);
        if (std::string_view(computed_, hash_len) != hash)
            add(at, seq, "hash mismatch (entry edited)");
    }

    void observe(std::uint64_t seq, std::string_view hash, std::string_view body, bool link) {
        const std::uint64_t before = prev_seq_;
        prev_seq_ = seq;
        if (seq > result_.last.seq) {
            if (seq > result_.last.seq + 1) gaps_[result_.last.seq + 1] = Gap{seq - 1, here()};
            result_.last = Head{seq, std::string(hash)};
        } else if (auto g = find_gap(seq); g != gaps_.end()) {
            problem(seq, "out of order (seq " + std::to_string(seq) + " after " +
                             std::to_string(before) + ")");
            const auto [lo, gap] = *g;
            gaps_.erase(g);
            if (lo < seq) gaps_[lo] = Gap{seq - 1, gap.at};
            if (seq < gap.hi) gaps_[seq + 1] = Gap{gap.hi, gap.at};
        } else {
            problem(seq, "duplicate entry (seq " + std::to_string(seq) + " seen before)");
            return;
        }
        if (link) {
            if (const char* prev = known_hash(seq - 1))
                check_link(seq, hash, body, std::string_view(prev, hash_len), here());
            else if (find_gap(seq - 1) != gaps_.end())
                pending_.emplace(seq - 1, Pending{seq, std::string(hash), std::string(body), here()});
        }
        Slot& s = ring_[seq % window];
        s.seq = seq;
        std::copy(hash.begin(), hash.end(), s.hash.begin());
        // Entries that came before this, their predecessor, can be checked now.
        for (auto [it, end] = pending_.equal_range(seq); it != end;) {
            check_link(it->second.seq, it->second.hash, it->second.body, hash, it->second.at);
            it = pending_.erase(it);
        }
        if (head_ && seq == head_->seq) head_seen_.emplace(std::string(hash), here());
    }

    std::optional<Head> head_;
    Sha256 sha_;
    char computed_[hash_len];
    std::vector<Slot> ring_ = std::vector<Slot>(window);
    std::map<std::uint64_t, Gap> gaps_;
    std::multimap<std::uint64_t, Pending> pending_;
    std::optional<std::pair<std::string, Loc>> head_seen_;
    std::vector<P> problems_;
    AuditLog::VerifyResult result_;
    std::size_t file_index_ = 0;
    std::string file_;
    std::size_t line_ = 0;
    std::uint64_t prev_seq_ = 0;
};

} // namespace

// ---------------------------------------------------------------- details

void append_attr(std::string& detail, Name key, std::string_view value) {
    if (!detail.empty()) detail += ';';
    detail += key.view();
    detail += '=';
    append_escaped(detail, value, Esc::Full);
}

std::string format_detail(const std::vector<Attr>& attrs) {
    std::string out;
    for (const auto& a : attrs) append_attr(out, a.key, a.value);
    return out;
}

std::string unescape(std::string_view s) {
    auto hexval = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\' || i + 1 == s.size()) {
            out += s[i];
            continue;
        }
        const char c = s[i + 1];
        if (c == 'x' && i + 3 < s.size() && hexval(s[i + 2]) >= 0 && hexval(s[i + 3]) >= 0) {
            out += static_cast<char>(hexval(s[i + 2]) * 16 + hexval(s[i + 3]));
            i += 3;
            continue;
        }
        switch (c) {
        case '\\': case ';': case '=': out += c; break;
        case 't': out += '\t'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        default: out += '\\'; continue; // not an escape we write: keep it as it is
        }
        ++i;
    }
    return out;
}

std::string seq_run(std::uint64_t first, std::uint64_t last) {
    return std::to_string(first) + "-" + std::to_string(last);
}

bool parse_seq_run(std::string_view text, std::uint64_t& first, std::uint64_t& last) {
    const auto dash = text.find('-');
    if (dash == std::string_view::npos) return false;
    auto number = [](std::string_view s, std::uint64_t& v) {
        auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        return !s.empty() && ec == std::errc() && p == s.data() + s.size();
    };
    return number(text.substr(0, dash), first) && number(text.substr(dash + 1), last) && first > 0 && first <= last;
}

std::vector<std::pair<std::string, std::string>> parse_detail(std::string_view detail) {
    std::vector<std::pair<std::string, std::string>> out;
    std::size_t start = 0;
    while (start < detail.size()) {
        std::size_t end = start;
        while (end < detail.size() && detail[end] != ';') end += detail[end] == '\\' ? 2 : 1;
        end = std::min(end, detail.size());
        const std::string_view part = detail.substr(start, end - start);
        const std::size_t eq = part.find('=');
        if (eq == std::string_view::npos) out.emplace_back(unescape(part), std::string());
        else out.emplace_back(std::string(part.substr(0, eq)), unescape(part.substr(eq + 1)));
        start = end + 1;
    }
    return out;
}

// ---------------------------------------------------------------- the log

struct AuditLog::State {
    struct Segment { // bytes of the buffer that go to one day file
        std::int64_t day;
        std::size_t end;
    };

    std::filesystem::path dir;
    Warn warn;

    mutable std::mutex mu; // the chain and the buffer
    std::uint64_t seq = 0;
    std::array<char, hash_len> hash{};
    std::int64_t day = INT64_MIN; // newest file's day: appends never go back
    std::string pending;
    std::vector<Segment> segments;
    std::error_code failed;
    Head durable;
    std::uint64_t dropped = 0;
    Sha256 sha;
    std::int64_t date_day = INT64_MIN; // the cached "YYYY-MM-DD" below
    char date[10] = {};

    // Shared attributes (append_shared). By the caller's string: its text
    // as written and id (the string is kept alive so that its address is
    // not reused for another). By id: the day file and generation of the
    // set entry that defines it; `generation` changes when entries are taken
    // back (rollback), so that a set entry taken back is written again.
    struct Defined {
        std::int64_t day;
        std::uint64_t generation;
    };
    struct Shared {
        std::shared_ptr<const std::string> keep;
        std::string text, id;
        Defined* defined = nullptr; // its node in `defined` (nodes stay put)
    };
    // Both cleared together (Shared points into `defined`).
    std::unordered_map<const std::string*, Shared> shared;
    std::unordered_map<std::string, Defined> defined;
    // The last strings found in `shared`, by address (nodes stay put, and a
    // string there is kept alive, so its address names it): the entries of
    // a batch use a few sets in turn, and a look here misses the cache less
    // than a look in the map. Cleared with it.
    struct Recent {
        const std::string* key = nullptr;
        Shared* shared = nullptr;
    };
    std::array<Recent, 64> recent{};
    Recent& recent_slot(const std::string* key) {
        return recent[(reinterpret_cast<std::uintptr_t>(key) * 0x9E3779B97F4A7C15u) >> 58];
    }
    std::uint64_t generation = 0;
    static constexpr std::size_t max_shared = 4096; // then forgotten, and written again as needed

    std::mutex sync_mu; // order of syncs; the open file
    std::string writing;
    std::vector<Segment> writing_segments;
    Fd file;
    std::int64_t file_day = INT64_MIN;

    void warning(const std::string& m) const {
        if (warn) warn(m);
        else std::fprintf(stderr, "audit: %s\n", m.c_str());
    }

    // Reads bytes [start, start + n) of `fd` into `buf`.
    static void read_at(const std::filesystem::path& path, int fd, std::size_t start, std::size_t n,
                        std::string& buf) {
        buf.resize(n);
        std::size_t got = 0;
        while (got < n) {
            const ssize_t r = ::pread(fd, buf.data() + got, n - got, static_cast<off_t>(start + got));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) fail(path, "cannot read", r < 0 ? errno : EIO);
            got += static_cast<std::size_t>(r);
        }
    }

    // Removes the bytes of `name` from `keep` on (they are `bytes`), keeping
    // them in `<name><suffix>`: they are audit data, possibly evidence, and
    // are never silently destroyed.
    void set_aside(const std::string& name, int fd, std::size_t keep, std::string_view bytes,
                   const char* suffix) {
        const auto path = dir / name;
        const auto aside = dir / (name + suffix);
        {
            Fd t(::open(aside.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
            if (t.fd < 0) fail(aside, "cannot create", errno);
            if (int e = write_all(t.fd, bytes.data(), bytes.size())) fail(aside, "cannot write", e);
            if (::fdatasync(t.fd) != 0) fail(aside, "cannot sync", errno);
        }
        if (::ftruncate(fd, static_cast<off_t>(keep)) != 0) fail(path, "cannot truncate", errno);
        if (::fdatasync(fd) != 0) fail(path, "cannot sync", errno);
        if (int e = fsync_dir(dir)) fail(dir, "cannot sync", e);
    }

    // Reads the complete lines of a file of `size` bytes from the last one
    // back, a 64 KiB tail first and a larger one only when a line may begin
    // before it, and calls visit(entry or nullptr when the line is not a
    // well-formed entry, file offset just after the line) until it returns
    // true. `buf` holds the tail last read (up to the end of the file).
    template <class Visit>
    static void scan_back(const std::filesystem::path& path, int fd, std::size_t size, std::string& buf,
                          Visit visit) {
        for (std::size_t window = 64 * 1024;; window *= 4) {
            const std::size_t start = size > window ? size - window : 0;
            read_at(path, fd, start, size - start, buf);
            std::size_t nl = buf.rfind('\n');
            while (nl != std::string::npos) {
                const std::size_t prev = nl == 0 ? std::string::npos : buf.rfind('\n', nl - 1);
                if (prev == std::string::npos && start > 0) break; // may begin before the window
                const std::size_t begin = prev == std::string::npos ? 0 : prev + 1;
                LineView v;
                const bool entry = parse_line(std::string_view(buf).substr(begin, nl - begin), v);
                if (visit(entry ? &v : nullptr, start + nl + 1)) return;
                nl = prev;
            }
            if (start == 0) return;
        }
    }

    // Cuts a damaged tail off `name` and returns the head of what remains, if
    // any entry does.
    std::optional<Head> recover(const std::string& name) {
        const auto path = dir / name;
        Fd f(::open(path.c_str(), O_RDWR | O_CLOEXEC));
        if (f.fd < 0) fail(path, "cannot open", errno);
        struct stat st {};
        if (::fstat(f.fd, &st) != 0) fail(path, "cannot stat", errno);
        const auto size = static_cast<std::size_t>(st.st_size);
        if (size == 0) return std::nullopt;

        // Look backwards for the last complete line that is a well-formed
        // entry.
        std::string buf;
        std::optional<Head> head;
        std::size_t good_end = 0; // file offset just after that line
        scan_back(path, f.fd, size, buf, [&](const LineView* v, std::size_t end) {
            if (!v) return false;
            head = Head{v->seq, std::string(v->hash)};
            good_end = end;
            return true;
        });
        if (good_end == size) return head;
        const std::size_t cut = size - good_end;
        set_aside(name, f.fd, good_end, std::string_view(buf.data() + (buf.size() - cut), cut), ".torn");
        warning(name + ": removed " + std::to_string(cut) + " damaged bytes at the end (" +
                (head ? "after seq " + std::to_string(head->seq) : std::string("no entry left")) +
                "; a crash during a write?); they are kept in " + name + ".torn");
        return head;
    }

    // Write-ahead recovery (see cut_after): in `name`, the offset just after
    // the entry `seq`, with that entry's hash; nullopt when every entry of
    // the file comes after `seq`. Throws when the file skips over `seq`.
    std::optional<std::pair<std::size_t, std::string>> end_of_entry(const std::string& name, int fd,
                                                                    std::size_t size, std::uint64_t seq) {
        const auto path = dir / name;
        std::string buf;
        std::optional<std::pair<std::size_t, std::string>> found;
        scan_back(path, fd, size, buf, [&](const LineView* v, std::size_t end) {
            if (!v || v->seq > seq) return false;
            if (v->seq < seq)
                throw std::runtime_error("audit: " + path.string() + ": entry " + std::to_string(seq) +
                                         " is missing (the file goes from " + std::to_string(v->seq) +
                                         " to a later entry)");
            found.emplace(end, std::string(v->hash));
            return true;
        });
        return found;
    }

    int write_segment(std::int64_t seg_day, const char* p, std::size_t n) {
        if (file.fd < 0 || file_day != seg_day) {
            if (file.fd >= 0) ::close(file.fd);
            file.fd = -1;
            const auto path = dir / file_name(seg_day);
            bool created = false;
            int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
            if (fd < 0 && errno == ENOENT) {
                fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                created = fd >= 0;
            }
            if (fd < 0) return errno;
            file.fd = fd;
            file_day = seg_day;
            if (created)
                if (int e = fsync_dir(dir)) return e; // the new name must survive a crash too
        }
        if (int e = write_all(file.fd, p, n)) return e;
        return ::fdatasync(file.fd) == 0 ? 0 : errno;
    }
};

AuditLog::AuditLog(std::filesystem::path dir, Warn warn) : s_(std::make_unique<State>()) {
    s_->dir = std::move(dir);
    s_->warn = std::move(warn);
    std::error_code ec;
    std::filesystem::create_directories(s_->dir, ec);
    if (ec) fail(s_->dir, "cannot create", ec.value());
    std::filesystem::permissions(s_->dir, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
    if (ec) fail(s_->dir, "cannot set mode 0700", ec.value());

    const auto files = list_files(s_->dir);
    std::optional<Head> head;
    for (auto it = files.rbegin(); it != files.rend() && !head; ++it) head = s_->recover(it->name);
    if (!files.empty()) s_->day = files.back().day;
    if (head) {
        s_->seq = head->seq;
        std::copy(head->hash.begin(), head->hash.end(), s_->hash.begin());
        s_->durable = *head;
    } else {
        std::copy(genesis_hash.begin(), genesis_hash.end(), s_->hash.begin());
    }
    s_->pending.reserve(1 << 20);
}

AuditLog::~AuditLog() {
    bool any;
    {
        std::lock_guard lock(s_->mu);
        any = !s_->pending.empty();
    }
    if (!any) return;
    try {
        if (auto r = sync(); !r.ok())
            s_->warning("entries appended after seq " + std::to_string(r.head.seq) +
                        " were not written: " + r.error.message());
    } catch (...) {
        // A destructor must not throw; sync() itself reports through errors.
    }
}

void AuditLog::append(std::int64_t ts_ms, const Entry& entry) {
    append_line(ts_ms, entry.kind, entry.record_id, &entry.attrs, {});
}

void AuditLog::append(std::int64_t ts_ms, Name kind, std::string_view record_id,
                      std::string_view detail) {
    append_line(ts_ms, kind, record_id, nullptr, detail);
}

void AuditLog::append_line(std::int64_t ts_ms, Name kind, std::string_view record_id,
                           const std::vector<Attr>* attrs, std::string_view detail) {
    State& s = *s_;
    ts_ms = clamp_ms(ts_ms);
    std::lock_guard lock(s.mu);
    if (s.failed) {
        ++s.dropped; // sync() reports the failure; buffering more would only grow
        return;
    }
    append_locked(s, ts_ms, kind, record_id, attrs, detail, {});
}

void AuditLog::append_shared(std::int64_t ts_ms, Name kind, std::string_view record_id,
                             std::string_view detail, const std::shared_ptr<const std::string>& shared) {
    if (!shared) {
        append_line(ts_ms, kind, record_id, nullptr, detail);
        return;
    }
    State& s = *s_;
    ts_ms = clamp_ms(ts_ms);
    std::lock_guard lock(s.mu);
    if (s.failed) {
        ++s.dropped;
        return;
    }
    State::Recent& recent = s.recent_slot(shared.get());
    if (recent.key != shared.get()) {
        if (s.shared.size() >= State::max_shared && !s.shared.count(shared.get())) {
            s.shared.clear();
            s.defined.clear();
            s.recent.fill({});
        }
        State::Shared& found = s.shared[shared.get()];
        if (!found.keep) {
            found.keep = shared;
            append_escaped(found.text, *shared, Esc::LineOnly); // as it will be written
            found.id = s.sha.set_id(found.text);
            found.defined = &s.defined.try_emplace(found.id, State::Defined{INT64_MIN, 0}).first->second;
        }
        recent = {shared.get(), &found};
    }
    State::Shared& sh = *recent.shared;
    const std::int64_t day = std::max(ts_ms / ms_per_day, s.day);
    State::Defined& d = *sh.defined;
    if (d.day != day || d.generation != s.generation) {
        std::string set;
        set.reserve(set_attr.size() + set_id_len + 1 + sh.text.size());
        set.append(set_attr).append(sh.id).append(1, ';').append(sh.text);
        append_locked(s, ts_ms, kind::set, {}, nullptr, set, {});
        d = {day, s.generation};
    }
    append_locked(s, ts_ms, kind, record_id, nullptr, detail, sh.id);
}

void AuditLog::append_locked(State& s, std::int64_t ts_ms, Name kind, std::string_view record_id,
                             const std::vector<Attr>* attrs, std::string_view detail, std::string_view set_id) {
    const std::int64_t ts_day = ts_ms / ms_per_day;
    const std::int64_t day = std::max(ts_day, s.day);
    std::string& out = s.pending;
    const std::size_t mark = out.size();

    char num[24];
    const auto seq = s.seq + 1;
    out.append(num, static_cast<std::size_t>(std::to_chars(num, num + sizeof num, seq).ptr - num));
    out += '\t';
    if (ts_day != s.date_day) {
        format_day(s.date, ts_day);
        s.date_day = ts_day;
    }
    char t[24];
    const auto ms = static_cast<unsigned>(ts_ms - ts_day * ms_per_day);
    std::memcpy(t, s.date, 10);
    t[10] = 'T';
    put_digits(t + 11, ms / 3'600'000, 2);
    t[13] = ':';
    put_digits(t + 14, ms / 60'000 % 60, 2);
    t[16] = ':';
    put_digits(t + 17, ms / 1000 % 60, 2);
    t[19] = '.';
    put_digits(t + 20, ms % 1000, 3);
    t[23] = 'Z';
    out.append(t, sizeof t);
    out += '\t';
    out += kind.view();
    out += '\t';
    if (record_id.empty()) out += '-';
    else if (record_id == "-") out += "\\x2d"; // "-" alone means "no record"
    else append_escaped(out, record_id, Esc::Full);
    out += '\t';
    if (attrs) {
        bool first = true;
        for (const auto& a : *attrs) {
            if (!first) out += ';';
            first = false;
            out += a.key.view();
            out += '=';
            append_escaped(out, a.value, Esc::Full);
        }
    } else {
        append_escaped(out, detail, Esc::LineOnly);
    }
    if (!set_id.empty()) {
        if (!detail.empty() || (attrs && !attrs->empty())) out += ';';
        out += set_attr;
        out += set_id;
    }

    char h[hash_len];
    try {
        s.sha.chain(std::string_view(s.hash.data(), hash_len),
                    std::string_view(out).substr(mark), h);
    } catch (...) {
        out.resize(mark); // leave the buffer and the chain as they were
        throw;
    }
    out += '\t';
    out.append(h, hash_len);
    out += '\n';

    std::copy(h, h + hash_len, s.hash.begin());
    s.seq = seq;
    if (s.segments.empty() || s.segments.back().day != day) s.segments.push_back({day, 0});
    s.segments.back().end = out.size();
    s.day = day;
}

SyncResult AuditLog::sync() {
    State& s = *s_;
    std::lock_guard sync_lock(s.sync_mu);
    Head head;
    {
        std::lock_guard lock(s.mu);
        if (s.failed) return {s.failed, s.durable};
        if (s.pending.empty()) return {{}, s.durable};
        std::swap(s.pending, s.writing);
        std::swap(s.segments, s.writing_segments);
        head.seq = s.seq;
        head.hash.assign(s.hash.data(), hash_len);
    }
    // The disk is written without holding `mu`, so appends carry on meanwhile.
    int err = 0;
    std::size_t begin = 0;
    for (const auto& seg : s.writing_segments) {
        if ((err = s.write_segment(seg.day, s.writing.data() + begin, seg.end - begin))) break;
        begin = seg.end;
    }
    const std::int64_t last_day = s.writing_segments.back().day;
    s.writing.clear();
    s.writing_segments.clear();

    std::lock_guard lock(s.mu);
    if (err) {
        s.failed = std::error_code(err, std::generic_category());
        s.warning("cannot write " + (s.dir / file_name(last_day)).string() + ": " +
                  s.failed.message() + "; entries after seq " + std::to_string(s.durable.seq) +
                  " may be lost and no more will be written until the log is reopened");
        return {s.failed, s.durable};
    }
    s.durable = head;
    return {{}, std::move(head)};
}

std::uint64_t AuditLog::cut_after(const Head& head) {
    State& s = *s_;
    std::lock_guard sync_lock(s.sync_mu);
    std::lock_guard lock(s.mu);
    if (!s.pending.empty()) throw std::logic_error("AuditLog::cut_after with entries not yet written");
    ++s.generation; // entries may go: set entries are written again
    if (s.seq < head.seq) {
        s.warning("the trail ends at entry " + std::to_string(s.seq) + " but the journal committed entries up to " +
                  std::to_string(head.seq) + ": entries are missing (run `switchboard audit verify`)");
        return 0;
    }
    if (s.seq == head.seq) {
        if (std::string_view(s.hash.data(), hash_len) != head.hash)
            s.warning("entry " + std::to_string(head.seq) +
                      " differs from the one the journal committed (run `switchboard audit verify`)");
        return 0;
    }
    if (s.file.fd >= 0) ::close(s.file.fd);
    s.file.fd = -1;
    s.file_day = INT64_MIN;
    const std::uint64_t removed = s.seq - head.seq;
    // First find where the committed head is (nothing is changed if it is
    // not there as committed), newest file first; then cut.
    struct Cut {
        std::string name;
        std::size_t keep; // bytes that stay; 0: the whole file goes
    };
    std::vector<Cut> cuts;
    bool found = false; // head.seq 0: every entry goes
    const auto files = list_files(s.dir);
    for (auto it = files.rbegin(); it != files.rend() && !found; ++it) {
        const auto path = s.dir / it->name;
        Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (f.fd < 0) fail(path, "cannot open", errno);
        struct stat st {};
        if (::fstat(f.fd, &st) != 0) fail(path, "cannot stat", errno);
        const auto size = static_cast<std::size_t>(st.st_size);
        const auto end = size > 0 ? s.end_of_entry(it->name, f.fd, size, head.seq) : std::nullopt;
        if (end && end->second != head.hash)
            throw std::runtime_error("audit: " + path.string() + ": entry " + std::to_string(head.seq) +
                                     " differs from the one the journal committed; not repairing");
        cuts.push_back({it->name, end ? end->first : 0});
        found = end.has_value();
    }
    if (!found && head.seq > 0)
        throw std::runtime_error("audit: " + s.dir.string() + ": entry " + std::to_string(head.seq) +
                                 ", which the journal committed, is in no file; not repairing");
    for (const Cut& c : cuts) {
        const auto path = s.dir / c.name;
        Fd f(::open(path.c_str(), O_RDWR | O_CLOEXEC));
        if (f.fd < 0) fail(path, "cannot open", errno);
        struct stat st {};
        if (::fstat(f.fd, &st) != 0) fail(path, "cannot stat", errno);
        const auto size = static_cast<std::size_t>(st.st_size);
        if (c.keep < size) {
            std::string tail;
            State::read_at(path, f.fd, c.keep, size - c.keep, tail);
            s.set_aside(c.name, f.fd, c.keep, tail, ".uncommitted");
        }
        if (c.keep > 0) continue;
        if (::unlink(path.c_str()) != 0) fail(path, "cannot remove", errno); // nothing of it committed
        if (int e = fsync_dir(s.dir)) fail(s.dir, "cannot sync", e);
    }
    s.seq = head.seq;
    std::copy(head.hash.begin(), head.hash.end(), s.hash.begin());
    s.durable = head;
    s.warning("removed " + std::to_string(removed) + " entries after entry " + std::to_string(head.seq) +
              ": they were written ahead of a journal transaction that did not commit (a crash "
              "between the two); they are kept in the files' .uncommitted copies");
    return removed;
}

AuditLog::Mark AuditLog::mark() const {
    std::lock_guard lock(s_->mu);
    Mark m;
    m.pending = s_->pending.size();
    m.segments = s_->segments.size();
    m.last_segment_end = s_->segments.empty() ? 0 : s_->segments.back().end;
    m.day = s_->day;
    m.head = Head{s_->seq, std::string(s_->hash.data(), hash_len)};
    return m;
}

std::string AuditLog::text_since(const Mark& mark) const {
    std::lock_guard lock(s_->mu);
    if (mark.pending > s_->pending.size()) return {};
    return s_->pending.substr(mark.pending);
}

void AuditLog::rollback(const Mark& mark) {
    State& s = *s_;
    std::lock_guard lock(s.mu);
    if (mark.pending > s.pending.size()) return; // synced meanwhile: nothing to undo here
    s.pending.resize(mark.pending);
    s.segments.resize(mark.segments);
    if (!s.segments.empty()) s.segments.back().end = mark.last_segment_end;
    s.day = mark.day;
    s.seq = mark.head.seq;
    std::copy(mark.head.hash.begin(), mark.head.hash.end(), s.hash.begin());
    ++s.generation; // set entries taken back are written again
}

void AuditLog::append_saved(std::string_view lines) {
    State& s = *s_;
    std::lock_guard lock(s.mu);
    ++s.generation;
    while (!lines.empty()) {
        auto nl = lines.find('\n');
        if (nl == std::string_view::npos) throw std::runtime_error("saved audit lines are torn");
        std::string_view line = lines.substr(0, nl);
        lines.remove_prefix(nl + 1);
        auto tab = line.rfind('\t');
        auto first_tab = line.find('\t');
        if (tab == std::string_view::npos || first_tab == std::string_view::npos || tab + 1 + hash_len != line.size())
            throw std::runtime_error("saved audit line is malformed");
        std::uint64_t seq = 0;
        std::from_chars(line.data(), line.data() + first_tab, seq);
        if (seq <= s.seq) continue; // already in the file
        if (seq != s.seq + 1)
            throw std::runtime_error("saved audit lines do not continue the chain (seq " +
                                     std::to_string(seq) + " after " + std::to_string(s.seq) + ")");
        char h[hash_len];
        s.sha.chain(std::string_view(s.hash.data(), hash_len), line.substr(0, tab), h);
        if (std::string_view(h, hash_len) != line.substr(tab + 1))
            throw std::runtime_error("saved audit line " + std::to_string(seq) +
                                     " does not match the chain");
        // The day file follows the entry's own date (chars 0..9 of the time).
        std::string_view date = line.substr(first_tab + 1, 10);
        std::int64_t day = s.day;
        int y = 0, mo = 0, d = 0;
        if (date.size() == 10 && std::sscanf(std::string(date).c_str(), "%d-%d-%d", &y, &mo, &d) == 3) {
            // days from civil (Howard Hinnant)
            y -= mo <= 2;
            const int era = (y >= 0 ? y : y - 399) / 400;
            const unsigned yoe = static_cast<unsigned>(y - era * 400);
            const unsigned doy = static_cast<unsigned>((153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1);
            const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            day = std::max<std::int64_t>(s.day, era * 146097 + static_cast<std::int64_t>(doe) - 719468);
        }
        s.pending.append(line);
        s.pending += '\n';
        if (s.segments.empty() || s.segments.back().day != day) s.segments.push_back({day, 0});
        s.segments.back().end = s.pending.size();
        s.day = day;
        s.seq = seq;
        std::copy(h, h + hash_len, s.hash.begin());
    }
}

std::optional<Head> AuditLog::verify_saved(const Head& from, std::string_view lines,
                                           std::string& problem) {
    Head head = from;
    Sha256 sha;
    while (!lines.empty()) {
        auto nl = lines.find('\n');
        if (nl == std::string_view::npos) {
            problem = "saved entries end in a torn line";
            return std::nullopt;
        }
        std::string_view line = lines.substr(0, nl);
        lines.remove_prefix(nl + 1);
        auto first_tab = line.find('\t');
        auto tab = line.rfind('\t');
        if (first_tab == std::string_view::npos || tab + 1 + hash_len != line.size()) {
            problem = "a saved entry is malformed";
            return std::nullopt;
        }
        std::uint64_t seq = 0;
        std::from_chars(line.data(), line.data() + first_tab, seq);
        if (seq <= head.seq) continue;
        if (seq != head.seq + 1) {
            problem = "saved entry " + std::to_string(seq) + " does not follow " + std::to_string(head.seq);
            return std::nullopt;
        }
        char h[hash_len];
        sha.chain(head.hash, line.substr(0, tab), h);
        if (std::string_view(h, hash_len) != line.substr(tab + 1)) {
            problem = "saved entry " + std::to_string(seq) + " does not match the chain";
            return std::nullopt;
        }
        head.seq = seq;
        head.hash.assign(h, hash_len);
    }
    return head;
}

std::uint64_t AuditLog::last_seq() const {
    std::lock_guard lock(s_->mu);
    return s_->seq;
}

std::string AuditLog::last_hash() const {
    std::lock_guard lock(s_->mu);
    return std::string(s_->hash.data(), hash_len);
}

Head AuditLog::head() const {
    std::lock_guard lock(s_->mu);
    return Head{s_->seq, std::string(s_->hash.data(), hash_len)};
}

Head AuditLog::durable_head() const {
    std::lock_guard lock(s_->mu);
    return s_->durable;
}

const std::filesystem::path& AuditLog::dir() const { return s_->dir; }

AuditLog::VerifyResult AuditLog::verify(const std::filesystem::path& dir, std::optional<Head> head) {
    Verifier v(std::move(head));
    const auto files = list_files(dir);
    for (std::size_t i = 0; i < files.size(); ++i) {
        v.start_file(i, files[i].name);
        LineReader reader(dir / files[i].name);
        std::string_view line;
        for (;;) {
            const auto got = reader.next(line);
            if (got == LineReader::Got::End) break;
            if (got == LineReader::Got::Torn) v.torn(line);
            else v.line(line);
        }
        if (reader.error()) v.unreadable(reader.error());
    }
    return v.finish();
}

namespace {
// Each well-formed entry of one file, in order (malformed lines skipped),
// until `visit` returns false; then false.
template <class Visit>
bool each_entry(const std::filesystem::path& file, Visit&& visit) {
    LineReader reader(file);
    std::string_view line;
    while (reader.next(line) == LineReader::Got::Line) {
        LineView v;
        if (parse_line(line, v) && !visit(v)) return false;
    }
    return true;
}
} // namespace

void AuditLog::scan(const std::filesystem::path& dir,
                    const std::function<bool(const Record&)>& visit) {
    for (const auto& f : list_files(dir))
        if (!each_entry(dir / f.name, [&](const LineView& v) { return visit(to_record(v)); })) return;
}

std::vector<Record> AuditLog::read_records(const std::filesystem::path& dir,
                                           const std::set<std::string, std::less<>>& record_ids,
                                           bool with_delivery_runs) {
    std::vector<Record> out;
    SetExpander sets;
    for (const auto& f : list_files(dir))
        each_entry(dir / f.name, [&](const LineView& v) {
            // Most entries are about other records: unescape only when it may matter.
            if (sets.see(v)) return true;
            if (v.record_id == "-") {
                if (with_delivery_runs && v.kind == kind::deliver.view()) out.push_back(to_record(v));
                return true;
            }
            Record r = to_record(v);
            if (!record_ids.count(r.record_id)) return true;
            sets.expand(r);
            out.push_back(std::move(r));
            return true;
        });
    return out;
}

std::vector<Record> AuditLog::read_range(const std::filesystem::path& dir, std::uint64_t first,
                                         std::uint64_t last) {
    std::vector<Record> out;
    if (first > last) return out;
    const auto files = list_files(dir);
    // The first seq of each file tells which files can hold the range.
    std::vector<std::uint64_t> starts;
    for (const auto& f : files) {
        LineReader reader(dir / f.name);
        std::string_view line;
        LineView v;
        starts.push_back(reader.next(line) == LineReader::Got::Line && parse_line(line, v) ? v.seq : 0);
    }
    for (std::size_t i = 0; i < files.size(); ++i) {
        if (i + 1 < files.size() && starts[i + 1] != 0 && starts[i + 1] <= first) continue;
        if (starts[i] > last) break;
        SetExpander sets; // a file defines the sets it uses
        each_entry(dir / files[i].name, [&](const LineView& v) {
            if (v.seq > last) return false;
            const bool set = sets.see(v);
            if (v.seq < first) return true;
            Record r = to_record(v);
            if (!set) sets.expand(r);
            out.push_back(std::move(r));
            return true;
        });
    }
    return out;
}

} // namespace switchboard::audit
