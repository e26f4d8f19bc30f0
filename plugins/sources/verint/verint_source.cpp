// verint: call recordings from a Verint WFO "Interaction Data Export" drop.
//
// The export rule writes one interaction as `yyyy/mm/dd/hh/<id>.json` (the
// metadata sidecar) beside `<id>.wav` (the audio), optionally
// `<id>_text.json` (a transcript) and `<id>_screen_N.scn` (screen capture).
// Each poll walks the hour directories that are still open, takes the
// complete, settled pairs and emits one record per interaction: metadata
// mapped to docs/records.md names, the audio as an attachment BY REFERENCE
// (file:// URI, SHA-256, size). Truncated or oversized sidecars and audio
// without a sidecar are quarantined; nothing of their content is logged.
//
// Durable state (see README "State"), none of it growing without bound:
//   cursor          "1 <hour>": every hour directory up to it is closed and
//                   never listed again;
//   hour:<hour>     one line per item of an open hour, or per item of a closed
//                   hour that is still held in Switchboard (erase finds its
//                   files through it), committed with the hour's records;
//   open            the hours that have an hour:<hour> key.
// An hour key goes when the hour is closed and all of its records were erased.
//
// format = "vfc" (MODELLED) reads Verint Financial Compliance metadata XML
// (`<id>.xml` beside `<id>.wav`) laid out in the same tree, with the same
// pairing, state, erase and reconciliation.
#include <switchboard/detail/json_record.hpp>
#include <switchboard/plugin.hpp>

#include <openssl/evp.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kHourMs = 3'600'000;
constexpr std::size_t kQuarantineHead = 64u << 10; // bytes kept of an oversized file
constexpr std::size_t kIoBlock = 64u << 10;
constexpr int kLogsPerPoll = 20; // quarantine warnings per poll

// Categories (docs/records.md).
constexpr const char* kCall = "operational.call";
constexpr const char* kPhone = "contact.phone";
constexpr const char* kPci = "operational.pci";
constexpr const char* kHint = "classification.hint";
constexpr const char* kVendor = "vendor.id";
constexpr const char* kDefect = "operational.defect";

std::string errno_text(int e) { return std::strerror(e); }

// --- names and times --------------------------------------------------------------

// Interaction ids: Verint's are 30 digits; accept letters and '-' too, but
// never '_' or '.', which separate the id from the rest of a file name.
bool valid_stem(std::string_view s) {
    if (s.empty() || s.size() > 128) return false;
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-'))
            return false;
    return true;
}

// An external id must survive one state line: printable, no spaces.
bool valid_external_id(std::string_view s) {
    if (s.empty() || s.size() > 128) return false;
    for (char c : s)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '=') return false;
    return true;
}

enum class Kind { Json, Wav, Text, Other };

struct FileName {
    std::string stem;
    Kind kind;
};

// "<id>.json" (VFC: "<id>.xml"), "<id>.wav", "<id>_text.json"; anything else
// that starts with "<id>." or "<id>_" (screen captures, temporary names) is
// Other.
std::optional<FileName> classify(std::string_view name, bool vfc) {
    if (name.empty() || name.front() == '.') return std::nullopt;
    std::size_t cut = name.find_first_of("._");
    if (cut == std::string_view::npos) return std::nullopt;
    std::string_view stem = name.substr(0, cut), rest = name.substr(cut);
    if (!valid_stem(stem)) return std::nullopt;
    Kind k = rest == (vfc ? ".xml" : ".json") ? Kind::Json
             : rest == ".wav" ? Kind::Wav
             : (!vfc && rest == "_text.json") ? Kind::Text
                                              : Kind::Other;
    return FileName{std::string(stem), k};
}

bool all_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

int two(std::string_view s) { return (s[0] - '0') * 10 + (s[1] - '0'); }

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
std::int64_t days_from_civil(std::int64_t y, int m, int d) {
    y -= m <= 2;
    std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    std::int64_t yoe = y - era * 400;
    std::int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

// "yyyy/mm/dd/hh" -> Unix ms of the hour's start, read as UTC (the export
// names hours by the call's start; see README on local time).
std::optional<std::int64_t> hour_start_ms(std::string_view h) {
    if (h.size() != 13 || h[4] != '/' || h[7] != '/' || h[10] != '/') return std::nullopt;
    std::string_view y = h.substr(0, 4), m = h.substr(5, 2), d = h.substr(8, 2), hh = h.substr(11, 2);
    if (!all_digits(y) || !all_digits(m) || !all_digits(d) || !all_digits(hh)) return std::nullopt;
    std::int64_t year = std::stoi(std::string(y));
    return (days_from_civil(year, two(m), two(d)) * 24 + two(hh)) * kHourMs;
}

// The hour directory name of a time: "2025/01/06/09".
std::string hour_name(std::int64_t ms) {
    std::string t = sb::format_time(ms); // 2025-01-06T09:00:00.000Z
    return t.substr(0, 4) + "/" + t.substr(5, 2) + "/" + t.substr(8, 2) + "/" + t.substr(11, 2);
}

std::int64_t mtime_ms(const struct stat& st) {
    return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000;
}

// "2025-01-06T09:12:44" (no zone) -> ms, only to subtract two such times.
std::optional<std::int64_t> local_ms(std::string_view s) {
    std::string z(s);
    if (z.size() == 19) z += 'Z';
    return sb::detail::parse_time(z);
}

// --- files ---------------------------------------------------------------------------

// Names in `dir` that are subdirectories (dirs) or regular files, sorted;
// dot files never. `err` is errno on failure.
std::vector<std::string> list_dir(const std::string& dir, bool dirs, int& err) {
    std::vector<std::string> out;
    err = 0;
    DIR* d = ::opendir(dir.c_str());
    if (!d) {
        err = errno;
        return out;
    }
    while (dirent* e = ::readdir(d)) {
        std::string_view n = e->d_name;
        if (n.empty() || n.front() == '.') continue;
        bool is_dir = e->d_type == DT_DIR, is_reg = e->d_type == DT_REG;
        if (e->d_type == DT_UNKNOWN || e->d_type == DT_LNK) {
            struct stat st {};
            if (::fstatat(::dirfd(d), e->d_name, &st, 0) != 0) continue;
            is_dir = S_ISDIR(st.st_mode);
            is_reg = S_ISREG(st.st_mode);
        }
        if (dirs ? is_dir : is_reg) out.emplace_back(n);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

// The hour directories yyyy/mm/dd/hh under `root`, in time order. `keep` sees
// each prefix ("2025", "2025/01", "2025/01/06", "2025/01/06/09") and prunes.
template <class Keep>
std::vector<std::string> list_hours(const std::string& root, Keep&& keep, int& err) {
    std::vector<std::string> hours;
    static constexpr std::size_t widths[] = {4, 2, 2, 2};
    static constexpr int lo[] = {0, 1, 1, 0}, hi[] = {9999, 12, 31, 23};
    // Depth-first over the four levels.
    struct Level {
        std::string prefix;
        int depth;
    };
    std::vector<Level> stack{{"", 0}};
    err = 0;
    while (!stack.empty()) {
        Level at = std::move(stack.back());
        stack.pop_back();
        int e = 0;
        auto names = list_dir(at.prefix.empty() ? root : root + "/" + at.prefix, true, e);
        if (e) {
            if (at.depth == 0) err = e;
            continue;
        }
        std::vector<Level> next;
        for (const auto& n : names) {
            if (n.size() != widths[at.depth] || !all_digits(n)) continue;
            int v = std::stoi(n);
            if (v < lo[at.depth] || v > hi[at.depth]) continue;
            std::string p = at.prefix.empty() ? n : at.prefix + "/" + n;
            if (!keep(std::string_view(p))) continue;
            if (at.depth == 3)
                hours.push_back(std::move(p));
            else
                next.push_back({std::move(p), at.depth + 1});
        }
        // Reverse, so that the stack pops them in order.
        for (auto it = next.rbegin(); it != next.rend(); ++it) stack.push_back(std::move(*it));
    }
    return hours;
}

struct FileRead {
    int err = 0;
    std::string bytes;
    std::uint64_t size = 0; // the file's size at open
};

// At most `limit` bytes from the start of `path`.
FileRead read_head(const std::string& path, std::size_t limit) {
    FileRead r;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        r.err = errno;
        return r;
    }
    struct stat st {};
    if (::fstat(fd, &st) == 0) r.size = static_cast<std::uint64_t>(st.st_size);
    r.bytes.resize(std::min<std::uint64_t>(limit, std::max<std::uint64_t>(r.size, 4096)));
    std::size_t got = 0;
    while (got < limit) {
        if (got == r.bytes.size()) r.bytes.resize(std::min(limit, r.bytes.size() * 2));
        ssize_t n = ::read(fd, r.bytes.data() + got, r.bytes.size() - got);
        if (n < 0) {
            if (errno == EINTR) continue;
            r.err = errno;
            break;
        }
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
    }
    r.bytes.resize(got);
    ::close(fd);
    return r;
}

struct Hashed {
    int err = 0;
    const char* step = ""; // "read", "write": where err happened
    std::string hex;
    std::uint64_t size = 0;
};

// SHA-256 of `src`; with `copy_to`, the bytes are also copied there (written
// aside, fsynced, renamed into place) in the same pass.
Hashed hash_file(const std::string& src, const std::string& copy_to) {
    Hashed h;
    int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        h.err = errno;
        h.step = "open";
        return h;
    }
    int out = -1;
    std::string part = copy_to + ".part";
    if (!copy_to.empty()) {
        out = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0) {
            h.err = errno;
            h.step = "create copy";
            ::close(in);
            return h;
        }
    }
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
        h.err = ENOMEM;
        h.step = "hash";
    }
    std::vector<char> buf(kIoBlock);
    while (!h.err) {
        ssize_t n = ::read(in, buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            h.err = errno;
            h.step = "read";
            break;
        }
        if (n == 0) break;
        EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(n));
        h.size += static_cast<std::uint64_t>(n);
        for (ssize_t off = 0; out >= 0 && off < n;) {
            ssize_t w = ::write(out, buf.data() + off, static_cast<std::size_t>(n - off));
            if (w < 0) {
                if (errno == EINTR) continue;
                h.err = errno;
                h.step = "write copy";
                break;
            }
            off += w;
        }
    }
    ::close(in);
    if (out >= 0) {
        if (!h.err && ::fsync(out) != 0) {
            h.err = errno;
            h.step = "fsync copy";
        }
        ::close(out);
        if (!h.err && ::rename(part.c_str(), copy_to.c_str()) != 0) {
            h.err = errno;
            h.step = "rename copy";
        }
        if (h.err) ::unlink(part.c_str());
    }
    if (h.err) return h;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &len);
    static const char* hexd = "0123456789abcdef";
    for (unsigned int k = 0; k < len; ++k) {
        h.hex += hexd[md[k] >> 4];
        h.hex += hexd[md[k] & 15];
    }
    return h;
}

// file:// URI of an absolute path; bytes outside RFC 3986 unreserved and '/'
// are percent-encoded.
std::string file_uri(const std::string& path) {
    std::string out = "file://";
    static const char* hexd = "0123456789ABCDEF";
    for (unsigned char c : path) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
            c == '.' || c == '_' || c == '~' || c == '/') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hexd[c >> 4];
            out += hexd[c & 15];
        }
    }
    return out;
}

// --- the sidecar as leaves ----------------------------------------------------------

struct Val {
    sb_value_type type = SB_VALUE_NULL;
    std::string s;
    std::int64_t i = 0;
    double f = 0;
};

// One JSON document as path -> value (paths as json_record.hpp writes them:
// "metadata.tags[0].name").
class Doc {
public:
    bool parse(std::string_view text, std::string& why) {
        leaves_.clear();
        sb::detail::JsonError err;
        bool ok = sb::detail::json_leaves(
            text,
            [&](std::string_view path, const sb_value& v) {
                Val x;
                x.type = v.type;
                if (v.type == SB_VALUE_STRING) x.s.assign(v.str, v.len);
                x.i = v.i;
                x.f = v.f;
                leaves_.emplace(std::string(path), std::move(x));
                return true;
            },
            err);
        if (!ok) why = err.text();
        return ok;
    }

    // A value that says something: a string that is not blank ("" is how
    // the export marks a value it did not calculate), or an integer as text.
    std::optional<std::string> text(const std::string& path) const {
        auto it = leaves_.find(path);
        if (it == leaves_.end()) return std::nullopt;
        const Val& v = it->second;
        if (v.type == SB_VALUE_INT) return std::to_string(v.i);
        if (v.type != SB_VALUE_STRING) return std::nullopt;
        if (v.s.find_first_not_of(" \t\r\n") == std::string::npos) return std::nullopt;
        return v.s;
    }
    // An integer, or a string of digits.
    std::optional<std::int64_t> integer(const std::string& path) const {
        auto it = leaves_.find(path);
        if (it == leaves_.end()) return std::nullopt;
        const Val& v = it->second;
        if (v.type == SB_VALUE_INT) return v.i;
        if (v.type == SB_VALUE_STRING && v.s.size() < 18 &&
            (all_digits(v.s) || (v.s.size() > 1 && v.s[0] == '-' && all_digits(v.s.substr(1)))))
            return std::stoll(v.s);
        return std::nullopt;
    }
    std::optional<double> number(const std::string& path) const {
        auto it = leaves_.find(path);
        if (it == leaves_.end()) return std::nullopt;
        if (it->second.type == SB_VALUE_INT) return static_cast<double>(it->second.i);
        if (it->second.type == SB_VALUE_FLOAT) return it->second.f;
        return std::nullopt;
    }
    const std::map<std::string, Val>& leaves() const { return leaves_; }
    // The first value at a path is kept (a repeated XML element adds nothing).
    void put(std::string path, std::string value) {
        Val v;
        v.type = SB_VALUE_STRING;
        v.s = std::move(value);
        leaves_.emplace(std::move(path), std::move(v));
    }

private:
    std::map<std::string, Val> leaves_;
};

// MODELLED (VFC metadata XML): a small strict reader for element-only XML.
// Leaf elements' text becomes values at dotted paths below the root
// ("<conversation><id>x</id></conversation>" -> "id" = "x"); attributes,
// comments, processing instructions and the XML declaration are skipped;
// the five predefined entities, character references and CDATA are decoded.
// Any other construct (DOCTYPE, mismatched or unclosed tags, text beside
// child elements) is an error with a byte offset; messages never quote input.
class XmlReader {
public:
    bool parse(std::string_view text, Doc& out, std::string& why) {
        t_ = text;
        p_ = 0;
        if (t_.substr(0, 3) == "\xEF\xBB\xBF") p_ = 3;
        if (!misc()) return fail(why);
        std::string root;
        if (!open_tag(root)) return fail(why, "expected the root element");
        if (!self_closed_ && !element(root, "", out, 0)) return fail(why);
        if (!misc() || p_ != t_.size()) return fail(why, "content after the root element");
        return true;
    }

private:
    bool fail(std::string& why, const char* m = nullptr) {
        if (m && !err_) err_ = m;
        why = std::string(err_ ? err_ : "malformed XML") + " at byte " + std::to_string(p_);
        return false;
    }
    bool error(const char* m) {
        if (!err_) err_ = m;
        return false;
    }
    void ws() {
        while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\t' || t_[p_] == '\r' || t_[p_] == '\n')) ++p_;
    }
    bool starts(std::string_view s) const { return t_.substr(p_, s.size()) == s; }
    bool skip_past(std::string_view end) {
        std::size_t at = t_.find(end, p_);
        if (at == std::string_view::npos) {
            p_ = t_.size();
            return error("unterminated markup");
        }
        p_ = at + end.size();
        return true;
    }
    // Whitespace, comments and processing instructions.
    bool misc() {
        for (;;) {
            ws();
            if (starts("<?")) {
                if (!skip_past("?>")) return false;
            } else if (starts("<!--")) {
                if (!skip_past("-->")) return false;
            } else if (starts("<!")) {
                return error("DOCTYPE and declarations are not accepted");
            } else {
                return true;
            }
        }
    }
    static bool name_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
               c == '-' || c == '.' || c == ':';
    }
    // "<name attr="..." ...>" or "/>"; sets self_closed_.
    bool open_tag(std::string& name) {
        if (!starts("<")) return error("expected an element");
        ++p_;
        std::size_t start = p_;
        while (p_ < t_.size() && name_char(t_[p_])) ++p_;
        if (p_ == start) return error("expected an element name");
        name.assign(t_.substr(start, p_ - start));
        for (;;) {
            ws();
            if (p_ >= t_.size()) return error("unterminated start tag");
            if (t_[p_] == '>') {
                ++p_;
                self_closed_ = false;
                return true;
            }
            if (starts("/>")) {
                p_ += 2;
                self_closed_ = true;
                return true;
            }
            // An attribute: name = "value" | 'value'.
            std::size_t a = p_;
            while (p_ < t_.size() && name_char(t_[p_])) ++p_;
            if (p_ == a) return error("malformed attribute");
            ws();
            if (p_ >= t_.size() || t_[p_] != '=') return error("malformed attribute");
            ++p_;
            ws();
            if (p_ >= t_.size() || (t_[p_] != '"' && t_[p_] != '\'')) return error("malformed attribute");
            char q = t_[p_++];
            std::size_t end = t_.find(q, p_);
            if (end == std::string_view::npos) return error("unterminated attribute");
            p_ = end + 1;
        }
    }
    // The content of <name> up to and including its end tag.
    bool element(const std::string& name, const std::string& path, Doc& out, int depth) {
        if (depth > 16) return error("elements nested too deeply");
        std::string text;
        bool children = false;
        for (;;) {
            if (p_ >= t_.size()) return error("unclosed element");
            if (starts("</")) {
                p_ += 2;
                std::size_t start = p_;
                while (p_ < t_.size() && name_char(t_[p_])) ++p_;
                if (t_.substr(start, p_ - start) != name) return error("mismatched end tag");
                ws();
                if (p_ >= t_.size() || t_[p_] != '>') return error("malformed end tag");
                ++p_;
                if (!path.empty() && !children) {
                    std::size_t a = text.find_first_not_of(" \t\r\n");
                    std::size_t b = text.find_last_not_of(" \t\r\n");
                    out.put(path, a == std::string::npos ? std::string() : text.substr(a, b - a + 1));
                }
                if (children && text.find_first_not_of(" \t\r\n") != std::string::npos)
                    return error("text beside child elements");
                return true;
            }
            if (starts("<!--")) {
                if (!skip_past("-->")) return false;
            } else if (starts("<![CDATA[")) {
                p_ += 9;
                std::size_t end = t_.find("]]>", p_);
                if (end == std::string_view::npos) return error("unterminated CDATA");
                text.append(t_.substr(p_, end - p_));
                p_ = end + 3;
            } else if (starts("<?")) {
                if (!skip_past("?>")) return false;
            } else if (starts("<")) {
                std::string child;
                if (!open_tag(child)) return false;
                children = true;
                std::string child_path = path.empty() ? child : path + "." + child;
                if (self_closed_)
                    out.put(child_path, "");
                else if (!element(child, child_path, out, depth + 1))
                    return false;
            } else if (t_[p_] == '&') {
                if (!entity(text)) return false;
            } else {
                text.push_back(t_[p_++]);
            }
        }
    }
    bool entity(std::string& out) {
        std::size_t end = t_.find(';', p_);
        if (end == std::string_view::npos || end - p_ > 12) return error("malformed entity");
        std::string_view e = t_.substr(p_ + 1, end - p_ - 1);
        p_ = end + 1;
        if (e == "amp") out += '&';
        else if (e == "lt") out += '<';
        else if (e == "gt") out += '>';
        else if (e == "quot") out += '"';
        else if (e == "apos") out += '\'';
        else if (e.size() > 1 && e[0] == '#') {
            bool hex = e[1] == 'x';
            std::string_view digits = e.substr(hex ? 2 : 1);
            unsigned long cp = 0;
            for (char c : digits) {
                int v = c >= '0' && c <= '9' ? c - '0'
                        : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : hex && c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                      : -1;
                if (v < 0 || cp > 0x10FFFF) return error("malformed character reference");
                cp = cp * (hex ? 16 : 10) + static_cast<unsigned long>(v);
            }
            if (digits.empty() || cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return error("malformed character reference");
            if (cp < 0x80) {
                out += static_cast<char>(cp);
            } else if (cp < 0x800) {
                out += static_cast<char>(0xC0 | (cp >> 6));
                out += static_cast<char>(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out += static_cast<char>(0xE0 | (cp >> 12));
                out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
                out += static_cast<char>(0x80 | (cp & 0x3F));
            } else {
                out += static_cast<char>(0xF0 | (cp >> 18));
                out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
                out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
                out += static_cast<char>(0x80 | (cp & 0x3F));
            }
        } else {
            return error("unknown entity");
        }
        return true;
    }

    std::string_view t_;
    std::size_t p_ = 0;
    bool self_closed_ = false;
    const char* err_ = nullptr;
};

// "2025-01-07 14:02:11.480" (VFC, MODELLED as UTC) -> RFC 3339.
std::optional<std::string> vfc_time(std::string t) {
    if (t.size() >= 19 && t[10] == ' ') t[10] = 'T';
    if (t.size() >= 19 && t.back() != 'Z' && t.find('+', 19) == std::string::npos &&
        t.find('-', 19) == std::string::npos)
        t += 'Z';
    if (!sb::detail::is_rfc3339(t)) return std::nullopt;
    return t;
}

// --- per-hour state ----------------------------------------------------------------

// What happened to one item (one id) of an hour directory.
enum Status : char {
    kEmitted = 'E',      // record committed; audio referenced in export_dir (or none)
    kCopied = 'C',       // record committed; audio copied into the data directory
    kRefused = 'R',      // the host refused the record (e.g. already past retention)
    kBadJson = 'Q',      // sidecar quarantined (malformed/oversized); size kept
    kOrphanAudio = 'O',  // .wav without .json quarantined after orphan_grace
    kOrphanText = 'T',   // _text.json without .json quarantined after orphan_grace
    kErased = 'X',       // erased while the hour was still open (a tombstone)
};

struct Entry {
    char status = kEmitted;
    std::uint64_t size = 0;  // kBadJson: the sidecar's size when quarantined
    std::string external_id; // when it differs from the file id
};

using Hour = std::map<std::string, Entry>; // file id -> entry

// "<id> <status>[ size=N][ id=X]" per line.
std::string serialize(const Hour& h) {
    std::string out;
    for (const auto& [stem, e] : h) {
        out += stem;
        out += ' ';
        out += e.status;
        if (e.size) out += " size=" + std::to_string(e.size);
        if (!e.external_id.empty()) out += " id=" + e.external_id;
        out += '\n';
    }
    return out;
}

Hour parse_hour(std::string_view text) {
    Hour h;
    while (!text.empty()) {
        std::size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        std::size_t sp = line.find(' ');
        if (sp == std::string_view::npos || sp + 1 >= line.size()) continue;
        Entry e;
        e.status = line[sp + 1];
        std::string_view rest = line.substr(sp + 2);
        while (!rest.empty()) {
            if (rest.front() == ' ') {
                rest.remove_prefix(1);
                continue;
            }
            std::size_t end = rest.find(' ');
            std::string_view tok = rest.substr(0, end);
            rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
            if (tok.substr(0, 5) == "size=" && all_digits(tok.substr(5)) && tok.size() < 25)
                e.size = std::stoull(std::string(tok.substr(5)));
            else if (tok.substr(0, 3) == "id=")
                e.external_id = std::string(tok.substr(3));
        }
        h[std::string(line.substr(0, sp))] = std::move(e);
    }
    return h;
}

bool held(char status) { return status == kEmitted || status == kCopied; }

std::vector<std::string> split_lines(std::string_view text) {
    std::vector<std::string> out;
    while (!text.empty()) {
        std::size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        if (!line.empty()) out.emplace_back(line);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    }
    return out;
}

// --- the plugin ----------------------------------------------------------------------

class VerintSource : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "verint";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "Verint call recordings from an export drop (yyyy/mm/dd/hh/<id>.json + "
                        "<id>.wav; or VFC <id>.xml, MODELLED)";
        i.kind = SB_KIND_SOURCE;
        i.capabilities = SB_CAP_TIMERS | SB_CAP_ATTACHMENTS;
        i.data_categories = {kCall,   kPhone, "staff.id", "staff.name", kHint, kPci,
                             "content.free_text", kVendor, kDefect, "media.voice"};
        i.config = {
            sb::Field::path("export_dir").required().describe(
                "The export rule's storage target: the directory holding yyyy/mm/dd/hh/"),
            sb::Field::string("format").choices({"wfo", "vfc"}).fallback("\"wfo\"").describe(
                "wfo: Interaction Data Export (<id>.json + <id>.wav); vfc (MODELLED): Verint "
                "Financial Compliance metadata XML (<id>.xml + <id>.wav) in the same tree"),
            sb::Field::duration("settle").min(0).fallback("\"30s\"").describe(
                "A file is taken once unchanged for this long (by its mtime, or as observed)"),
            sb::Field::duration("orphan_grace").min(0).fallback("\"1h\"").describe(
                "How long audio waits for its .json (and a .json for its audio) before the "
                "orphan is quarantined (or the record emitted without audio)"),
            sb::Field::duration("close_after").min(0).fallback("\"2d\"").describe(
                "An hour directory is watched for late files until this long after its hour "
                "ended; then it is closed and never listed again"),
            sb::Field::duration("max_age").min(kHourMs).fallback("\"28d\"").describe(
                "Hour directories that ended longer ago than this are not read at all (their "
                "records would be past retention); keep it >= the source's retention"),
            sb::Field::boolean("copy_audio").fallback("false").describe(
                "Copy each recording into the instance's data directory and reference the copy "
                "(deleted by the core's retention) instead of the export file"),
            sb::Field::boolean("delete_exported").fallback("true").describe(
                "The erase hook deletes the interaction's files from export_dir"),
            sb::Field::duration("vendor_retention").min(kHourMs).fallback("\"28d\"").describe(
                "Exported items older than this still in export_dir are reported (stale_exports)"),
            sb::Field::duration("reconcile_interval").min(1000).fallback("\"1d\"").describe(
                "How often export_dir is checked for items older than vendor_retention"),
            sb::Field::size("max_json").range(64, 64.0 * 1024 * 1024).fallback("\"1MiB\"").describe(
                "Largest .json sidecar or transcript read; larger ones are quarantined truncated"),
            sb::Field::string("queue_from").multi()
                .fallback("[\"metadata.customData.QueueName\", \"metadata.employeeOrgId\"]")
                .describe("Sidecar leaf paths tried in order for hints.queue (first non-empty)"),
            sb::Field::integer("batch").range(1, 10000).fallback("100").describe(
                "Interactions taken per poll"),
        };
        return i;
    }

    explicit VerintSource(sb::Host host)
        : sb::Plugin(host),
          export_dir_(normal(host.string("export_dir"))),
          vfc_(host.string("format") == "vfc"),
          settle_ms_(host.duration_ms("settle")),
          orphan_grace_ms_(host.duration_ms("orphan_grace")),
          close_after_ms_(host.duration_ms("close_after")),
          max_age_ms_(host.duration_ms("max_age")),
          copy_audio_(host.boolean("copy_audio")),
          delete_exported_(host.boolean("delete_exported")),
          vendor_retention_ms_(host.duration_ms("vendor_retention")),
          reconcile_ms_(host.duration_ms("reconcile_interval")),
          max_json_(static_cast<std::size_t>(host.integer("max_json"))),
          queue_from_(host.list("queue_from")),
          batch_(static_cast<std::size_t>(host.integer("batch"))),
          audio_dir_(normal(host.data_dir().string()) + "/audio") {
        std::vector<sb::detail::PathSegment> segs;
        for (const auto& p : queue_from_)
            if (!sb::detail::parse_path(p, segs))
                throw sb::Error(SB_ERR_INVALID, "config key 'queue_from': '" + p +
                                                    "' is not a field path (e.g. metadata.employeeOrgId)");
        load_state();
    }

    void start() {
        try {
            compact_closed();
        } catch (const sb::Error& e) { // not fatal: tried again when an hour closes
            host().warn(std::string("could not compact closed hours: ") + e.what());
        }
        host().info("watching " + export_dir_ + (vfc_ ? " (vfc export, MODELLED); " : " (wfo export); ") +
                    (watermark_.empty() ? std::string("no hour closed yet")
                                        : "hours up to " + watermark_ + " closed") +
                    "; " + std::to_string(hours_.size()) + " hour(s) with items held" +
                    (copy_audio_ ? "; audio copied into the data directory" : ""));
        // The first check soon after start (a daemon restarted daily would
        // otherwise never run a daily check), then every interval.
        host().timer(std::min<std::int64_t>(60'000, reconcile_ms_), reconcile_ms_,
                     [this] { reconcile(); });
    }

    // One pass over the open hour directories, at most `batch` interactions.
    // SB_OK when something was committed or quarantined, SB_IDLE otherwise.
    sb::Status poll() {
        std::lock_guard lock(mu_);
        logs_this_poll_ = 0;
        const std::int64_t now = host().now_ms();
        ++generation_;
        int err = 0;
        const std::string wm = watermark_;
        auto hours = list_hours(
            export_dir_,
            [&](std::string_view p) {
                if (wm.empty()) return true;
                std::string_view w = std::string_view(wm).substr(0, p.size());
                return p.size() < wm.size() ? p >= w : p > w;
            },
            err);
        if (err) {
            if (!dir_error_logged_)
                host().error("cannot list export_dir " + export_dir_ + ": " + errno_text(err));
            dir_error_logged_ = true;
            return SB_IDLE;
        }
        dir_error_logged_ = false;

        std::size_t budget = batch_;
        bool progress = false, complete = true, contiguous = true;
        std::string close_to;
        std::size_t skipped = 0;
        for (const auto& h : hours) {
            auto start = hour_start_ms(h);
            if (!start) continue;
            const std::int64_t end = *start + kHourMs;
            HourPass pass;
            if (end < now - max_age_ms_ && !hours_.count(h)) {
                ++skipped; // past max_age: never read
            } else {
                pass = process_hour(h, now, budget);
            }
            progress |= pass.progress;
            bool closable = !pass.pending && end + close_after_ms_ <= now;
            if (contiguous && closable)
                close_to = h;
            else
                contiguous = false;
            if (pass.exhausted) {
                complete = false;
                break;
            }
        }
        if (skipped) host().count("hours_skipped_old", skipped);
        if (skipped && skipped != last_skipped_) // once, not every poll
            host().info("skipped " + std::to_string(skipped) +
                        " hour director(ies) older than max_age without reading them");
        last_skipped_ = skipped;
        if (!close_to.empty()) close_through(close_to);
        if (complete) forget_unseen();
        return progress || !complete ? SB_OK : SB_IDLE;
    }

    // Deletes what this plugin holds of the interaction: the copied audio,
    // its state line and (delete_exported) its files in export_dir. The
    // recorder's own copy is Verint's: its retention rule deletes it.
    sb::Status erase(const sb::EraseRequest& req) {
        std::string ext(req.external_id);
        if (ext.empty() && req.record)
            if (auto m = req.record->meta(SB_META_EXTERNAL_ID)) ext = std::string(*m);
        host().count("erase_requests");
        const std::string rid(req.record_id);
        if (ext.empty()) {
            host().warn("erase " + rid + ": no external id; nothing to find");
            return SB_OK;
        }
        std::lock_guard lock(mu_);
        std::string hour, stem;
        if (auto it = index_.find(ext); it != index_.end()) {
            hour = it->second.first;
            stem = it->second.second;
        } else if (valid_stem(ext) && ext.size() >= 10 && all_digits(ext.substr(0, 10))) {
            // Not (or no longer) in the state: the modelled WFO id starts with
            // the call's yyyymmddhh, which names its hour directory.
            hour = ext.substr(0, 4) + "/" + ext.substr(4, 2) + "/" + ext.substr(6, 2) + "/" +
                   ext.substr(8, 2);
            stem = ext;
        }
        int copies = 0, exported = 0;
        if (!stem.empty()) {
            std::string copy = audio_dir_ + "/" + stem + ".wav";
            if (::unlink(copy.c_str()) == 0) {
                ++copies;
            } else if (errno != ENOENT) {
                int e = errno;
                throw sb::Error(SB_ERR_TRANSIENT, "erase " + rid + ": cannot delete the audio copy of " +
                                                      stem + ": " + errno_text(e));
            }
        }
        if (!hour.empty() && delete_exported_) {
            const std::string dir = export_dir_ + "/" + hour;
            int e = 0;
            for (const auto& name : list_dir(dir, false, e)) {
                auto fn = classify(name, vfc_);
                if (!fn || fn->stem != stem) continue;
                if (::unlink((dir + "/" + name).c_str()) == 0) {
                    ++exported;
                } else if (errno != ENOENT) {
                    int ue = errno;
                    throw sb::Error(SB_ERR_TRANSIENT, "erase " + rid + ": cannot delete " + hour + "/" +
                                                          name + ": " + errno_text(ue));
                }
            }
            if (e && e != ENOENT)
                throw sb::Error(SB_ERR_TRANSIENT,
                                "erase " + rid + ": cannot list " + hour + ": " + errno_text(e));
            // A closed hour gets no more files: its directories go once empty
            // (rmdir refuses a non-empty one), so the tree does not only grow.
            if (!watermark_.empty() && hour <= watermark_) {
                std::string d = hour; // then its day, month and year
                while (!d.empty() && ::rmdir((export_dir_ + "/" + d).c_str()) == 0) {
                    std::size_t slash = d.rfind('/');
                    d = slash == std::string::npos ? std::string() : d.substr(0, slash);
                }
            }
        }
        if (!hour.empty()) forget_item(hour, stem, ext);
        host().count("erase_vendor_retention_rule");
        if (copies) host().count("copies_deleted", static_cast<std::uint64_t>(copies));
        if (exported) host().count("exported_files_deleted", static_cast<std::uint64_t>(exported));
        host().info("erase " + rid + " (interaction " + (stem.empty() ? ext : stem) + "): " +
                    std::to_string(exported) + " export file(s) and " + std::to_string(copies) +
                    " copy(ies) deleted" + (delete_exported_ ? "" : " (delete_exported is off)") +
                    "; the recorder's copy is deleted by the council's Verint retention rule");
        return SB_OK;
    }

private:
    struct Group {
        bool json = false, wav = false, text = false;
    };
    struct HourPass {
        bool pending = false;   // something waits (settle, grace, read error)
        bool progress = false;  // committed or quarantined something
        bool exhausted = false; // the batch budget ran out inside this hour
    };
    struct Outcome {
        enum Kind { Wait, Emit, Quarantined } kind = Wait;
        Entry entry;
        std::optional<sb::Record> record;
        std::string copy; // audio copy made for the record
    };
    struct Seen {
        std::int64_t size = -1, mtime = 0, first = 0;
        std::uint64_t generation = 0;
    };

    static std::string normal(const std::string& p) {
        std::string s = fs::absolute(fs::path(p)).lexically_normal().string();
        while (s.size() > 1 && s.back() == '/') s.pop_back();
        return s;
    }

    // --- state ------------------------------------------------------------------

    void load_state() {
        if (auto c = host().state("cursor")) {
            std::string_view v = *c;
            if (v.substr(0, 2) != "1 ")
                throw sb::Error(SB_ERR_INTERNAL, "stored state 'cursor' is not readable");
            v.remove_prefix(2);
            if (v != "-") {
                if (!hour_start_ms(v))
                    throw sb::Error(SB_ERR_INTERNAL, "stored state 'cursor' is not readable");
                watermark_ = std::string(v);
            }
        }
        if (auto o = host().state("open"))
            for (auto& h : split_lines(*o)) {
                open_.insert(h);
                if (auto v = host().state(("hour:" + h).c_str())) hours_[h] = parse_hour(*v);
            }
        for (const auto& [h, hour] : hours_) index_hour(h, hour);
    }

    void index_hour(const std::string& h, const Hour& hour) {
        for (const auto& [stem, e] : hour)
            if (held(e.status)) index_[e.external_id.empty() ? stem : e.external_id] = {h, stem};
    }

    void save_open() {
        std::string v;
        for (const auto& h : open_) v += h + "\n";
        sb::Status s = v.empty() ? host().clear_state("open") : host().set_state("open", v);
        if (s != SB_OK) throw sb::Error(SB_ERR_UNAVAILABLE, "could not store state 'open'");
    }

    // Closed hours keep only the items Switchboard still holds (for erase).
    void compact_closed() {
        std::vector<std::string> closed;
        for (const auto& [h, hour] : hours_)
            if (!watermark_.empty() && h <= watermark_) closed.push_back(h);
        for (const auto& h : closed) compact(h);
    }

    void compact(const std::string& h) {
        auto it = hours_.find(h);
        if (it == hours_.end()) return;
        Hour kept;
        for (const auto& [stem, e] : it->second)
            if (held(e.status)) kept.emplace(stem, e);
        if (kept.size() == it->second.size() && !kept.empty()) return;
        store_hour(h, kept);
    }

    // Writes (or, when empty, deletes) an hour's key and keeps `open` in step.
    void store_hour(const std::string& h, const Hour& hour) {
        const std::string key = "hour:" + h;
        if (hour.empty()) {
            if (host().clear_state(key.c_str()) != SB_OK)
                throw sb::Error(SB_ERR_UNAVAILABLE, "could not delete state '" + key + "'");
            hours_.erase(h);
            if (open_.erase(h)) save_open();
            return;
        }
        if (host().set_state(key.c_str(), serialize(hour)) != SB_OK)
            throw sb::Error(SB_ERR_UNAVAILABLE, "could not store state '" + key + "'");
        hours_[h] = hour;
    }

    void close_through(const std::string& h) {
        if (host().set_state("cursor", "1 " + h) != SB_OK) {
            host().count("cursor_not_saved");
            return; // closed again on a later poll
        }
        host().count("hours_closed");
        host().debug("hours up to " + h + " closed");
        watermark_ = h;
        compact_closed();
    }

    // After erase: the item's line goes (a tombstone while the hour is open,
    // so that a file still there is not taken again).
    void forget_item(const std::string& h, const std::string& stem, const std::string& ext) {
        index_.erase(ext);
        auto it = hours_.find(h);
        bool closed = !watermark_.empty() && h <= watermark_;
        if (closed) {
            if (it == hours_.end() || !it->second.count(stem)) return;
            Hour next = it->second;
            next.erase(stem);
            store_hour(h, next);
            return;
        }
        Hour next = it == hours_.end() ? Hour{} : it->second;
        Entry tomb;
        tomb.status = kErased;
        next[stem] = tomb;
        if (!open_.count(h)) {
            open_.insert(h);
            save_open();
        }
        store_hour(h, next);
    }

    // --- settling ----------------------------------------------------------------

    // Whether a file has been left alone for `min_age`: by its mtime against
    // the host clock, or, when the mtime is in the future or too recent (a
    // share with another clock, a test clock), as observed unchanged across
    // polls for that long.
    bool aged(const std::string& rel, const struct stat& st, std::int64_t min_age, std::int64_t now) {
        if (min_age <= 0) return true;
        const std::int64_t mt = mtime_ms(st);
        if (mt <= now && now - mt >= min_age) return true;
        Seen& s = seen_[rel];
        s.generation = generation_;
        if (s.size != static_cast<std::int64_t>(st.st_size) || s.mtime != mt) {
            s.size = static_cast<std::int64_t>(st.st_size);
            s.mtime = mt;
            s.first = now;
            return false;
        }
        return now - s.first >= min_age;
    }

    void forget_unseen() {
        for (auto it = seen_.begin(); it != seen_.end();)
            it = it->second.generation == generation_ ? std::next(it) : seen_.erase(it);
    }

    // --- one hour directory ----------------------------------------------------------

    // Whether an item needs no further look.
    bool settled_item(const Entry& e, const Group& g, const std::string& base) const {
        switch (e.status) {
        case kBadJson: {
            if (!g.json) return true;
            struct stat st {};
            // Rewritten (another size): look again.
            return ::stat((base + (vfc_ ? ".xml" : ".json")).c_str(), &st) != 0 ||
                   static_cast<std::uint64_t>(st.st_size) == e.size;
        }
        case kOrphanAudio:
        case kOrphanText: return !g.json; // its sidecar arrived late: take the pair
        default: return true;
        }
    }

    HourPass process_hour(const std::string& h, std::int64_t now, std::size_t& budget) {
        HourPass pass;
        const std::string dir = export_dir_ + "/" + h;
        int err = 0;
        auto names = list_dir(dir, false, err);
        if (err) {
            if (err == ENOENT) return pass; // removed meanwhile
            read_error(h, err);
            pass.pending = true;
            return pass;
        }
        std::map<std::string, Group> groups;
        for (const auto& n : names) {
            auto fn = classify(n, vfc_);
            if (!fn) continue;
            Group& g = groups[fn->stem];
            if (fn->kind == Kind::Json) g.json = true;
            if (fn->kind == Kind::Wav) g.wav = true;
            if (fn->kind == Kind::Text) g.text = true;
        }
        auto hit = hours_.find(h);
        std::vector<sb::Record> records;
        std::vector<std::pair<std::string, Outcome>> built; // records' items, in order
        std::map<std::string, Entry> quarantined;
        for (auto& [stem, g] : groups) {
            if (!g.json && !g.wav && !g.text) continue; // only screen captures etc.
            if (hit != hours_.end()) {
                auto e = hit->second.find(stem);
                if (e != hit->second.end() && settled_item(e->second, g, dir + "/" + stem)) continue;
            }
            if (budget == 0) {
                pass.exhausted = pass.pending = true;
                break;
            }
            Outcome o = consider(h, stem, g, now);
            if (o.kind == Outcome::Wait) {
                pass.pending = true;
                continue;
            }
            --budget;
            if (o.kind == Outcome::Quarantined) {
                quarantined[stem] = o.entry;
                pass.progress = true;
                continue;
            }
            records.push_back(std::move(*o.record));
            o.record.reset();
            built.emplace_back(stem, std::move(o));
        }
        if (records.empty() && quarantined.empty()) return pass;

        Hour next = hit == hours_.end() ? Hour{} : hit->second;
        for (auto& [stem, e] : quarantined) next[stem] = e;
        for (auto& [stem, o] : built) next[stem] = o.entry;
        if (!open_.count(h)) { // listed first, so that a restart finds the hour key
            open_.insert(h);
            save_open();
        }
        const std::string key = "hour:" + h;
        std::uint64_t ok = 0, dup = 0, refused = 0;
        if (!records.empty()) {
            const std::size_t n = records.size();
            std::vector<sb::Status> results;
            std::string value = serialize(next);
            sb::Status s = host().emit_batch(records, key.c_str(), value.c_str(), &results);
            if (s != SB_OK) {
                for (auto& [stem, o] : built)
                    if (!o.copy.empty()) ::unlink(o.copy.c_str());
                host().count("emit_unavailable");
                throw sb::Error(s, "journal did not commit " + std::to_string(n) +
                                       " record(s) of hour " + h + "; they will be taken again");
            }
            for (std::size_t k = 0; k < n; ++k) {
                if (results[k] == SB_OK) {
                    ++ok;
                } else if (results[k] == SB_DUPLICATE) {
                    ++dup;
                } else {
                    ++refused;
                    auto& [stem, o] = built[k];
                    if (!o.copy.empty()) ::unlink(o.copy.c_str());
                    next[stem].status = kRefused;
                    host().warn("interaction " + h + "/" + stem + " refused by the host (" +
                                sb::status_name(results[k]) + ")");
                }
            }
            hours_[h] = next;
            if (refused && host().set_state(key.c_str(), serialize(next)) != SB_OK)
                host().count("state_not_saved"); // kept as held; erase never comes: harmless
        } else {
            store_hour(h, next);
        }
        index_hour(h, hours_[h]);
        if (ok) host().count("records_emitted", ok);
        if (dup) host().count("records_duplicate", dup);
        if (refused) host().count("records_refused", refused);
        host().info("hour " + h + ": " + std::to_string(ok) + " record(s) emitted, " +
                    std::to_string(dup) + " duplicate, " + std::to_string(refused) + " refused, " +
                    std::to_string(quarantined.size()) + " item(s) quarantined");
        pass.progress = true;
        return pass;
    }

    // What to do with one item now.
    Outcome consider(const std::string& h, const std::string& stem, const Group& g, std::int64_t now) {
        Outcome o;
        const std::string base = export_dir_ + "/" + h + "/" + stem;
        const std::string rel = h + "/" + stem;
        auto stat_of = [&](const std::string& suffix, struct stat& st) {
            if (::stat((base + suffix).c_str(), &st) == 0) return true;
            if (errno != ENOENT) read_error(rel + suffix, errno);
            return false;
        };
        if (g.json) {
            struct stat js {}, ws {}, ts {};
            const std::string sidecar = vfc_ ? ".xml" : ".json";
            if (!stat_of(sidecar, js)) return o;
            const bool wav = g.wav && stat_of(".wav", ws);
            const bool text = g.text && stat_of("_text.json", ts);
            // Every file is looked at, so that each one's observation goes on.
            bool ready = aged(rel + sidecar, js, settle_ms_, now);
            if (wav) ready = aged(rel + ".wav", ws, settle_ms_, now) && ready;
            if (text) ready = aged(rel + "_text.json", ts, settle_ms_, now) && ready;
            if (!ready) return o;
            return take_pair(h, stem, wav, text, js, now);
        }
        if (g.wav) {
            struct stat ws {};
            if (!stat_of(".wav", ws) || !aged(rel + ".wav", ws, orphan_grace_ms_, now)) return o;
            Hashed hs = hash_file(base + ".wav", "");
            if (hs.err) {
                if (hs.err != ENOENT) read_error(rel + ".wav", hs.err);
                return o;
            }
            // The audio stays where it is (the vendor's copy); the quarantine
            // keeps a manifest to find it, not the recording.
            std::string manifest = "{\"file\":" + sb::json_quote(rel + ".wav") +
                                   ",\"size\":" + std::to_string(hs.size) + ",\"sha256\":\"" + hs.hex +
                                   "\",\"mtime\":\"" + sb::format_time(mtime_ms(ws)) + "\"}";
            quarantine(manifest, std::string("orphan audio: no ") + (vfc_ ? ".xml" : ".json") +
                                     " sidecar within orphan_grace; the recording was left in export_dir",
                       rel + ".wav");
            host().count("orphan_audio");
            o.kind = Outcome::Quarantined;
            o.entry.status = kOrphanAudio;
            return o;
        }
        if (g.text) {
            struct stat ts {};
            if (!stat_of("_text.json", ts) || !aged(rel + "_text.json", ts, orphan_grace_ms_, now))
                return o;
            FileRead r = read_head(base + "_text.json", std::min(max_json_, kQuarantineHead));
            if (r.err) {
                if (r.err != ENOENT) read_error(rel + "_text.json", r.err);
                return o;
            }
            quarantine(r.bytes, "orphan transcript: no .json sidecar within orphan_grace (" +
                                    std::to_string(r.size) + " bytes)", rel + "_text.json");
            host().count("orphan_transcripts");
            o.kind = Outcome::Quarantined;
            o.entry.status = kOrphanText;
        }
        return o;
    }

    // A settled sidecar (with its audio and transcript, if any).
    Outcome take_pair(const std::string& h, const std::string& stem, bool wav, bool text,
                      const struct stat& js, std::int64_t now) {
        Outcome o;
        const std::string base = export_dir_ + "/" + h + "/" + stem;
        const std::string rel = h + "/" + stem;
        auto quarantined = [&](std::uint64_t size) {
            o.kind = Outcome::Quarantined;
            o.entry.status = kBadJson;
            o.entry.size = size;
            return std::move(o);
        };
        const auto jsize = static_cast<std::uint64_t>(js.st_size);
        const std::string sidecar = vfc_ ? ".xml" : ".json";
        // Oversized: only the head is read, for the quarantine.
        FileRead r = read_head(base + sidecar, jsize > max_json_ ? std::min(max_json_, kQuarantineHead)
                                                                 : max_json_ + 1);
        if (r.err) {
            if (r.err != ENOENT) read_error(rel + sidecar, r.err);
            return o;
        }
        if (jsize > max_json_ || r.bytes.size() > max_json_) {
            std::uint64_t size = std::max<std::uint64_t>(jsize, r.size);
            r.bytes.resize(std::min({r.bytes.size(), max_json_, kQuarantineHead}));
            quarantine(r.bytes, "sidecar larger than max_json (" + std::to_string(size) +
                                    " bytes; first " + std::to_string(r.bytes.size()) + " kept)",
                       rel + sidecar);
            host().count("json_oversized");
            return quarantined(jsize);
        }
        std::string_view doc_text = r.bytes;
        if (doc_text.substr(0, 3) == "\xEF\xBB\xBF") doc_text.remove_prefix(3);
        Doc doc;
        std::string why;
        if (vfc_ ? !XmlReader().parse(doc_text, doc, why) : !doc.parse(doc_text, why)) {
            quarantine(r.bytes, std::string("malformed sidecar ") + (vfc_ ? "XML" : "JSON") + " (" + why +
                                    ")" + (wav ? "; the recording was left in export_dir" : ""),
                       rel + sidecar);
            host().count("json_malformed");
            return quarantined(jsize);
        }
        auto ext = vfc_ ? doc.text("id") : doc.text("mediaId");
        if (!ext && !vfc_) ext = doc.text("metadata.transactionId");
        if (!ext) {
            quarantine(r.bytes, vfc_ ? "not a VFC metadata file: no id"
                                     : "not an interaction export: no mediaId or metadata.transactionId",
                       rel + sidecar);
            host().count("json_malformed");
            return quarantined(jsize);
        }
        std::vector<std::string> defects;
        const char* id_key = vfc_ ? "id" : "mediaId";
        if (!valid_external_id(*ext)) {
            defects.emplace_back(std::string(id_key) + " is not usable as an id; the file name is used");
            ext = stem;
        } else if (*ext != stem) {
            defects.emplace_back(std::string(id_key) + " differs from the file name");
        }
        // Is audio expected? WFO: unless "transcript only"; VFC: when the
        // sidecar names a media file (only <id>.wav beside it is taken).
        bool audio_expected;
        if (vfc_) {
            auto media = doc.text("media_file");
            audio_expected = media.has_value();
            if (media && *media != stem + ".wav") {
                defects.emplace_back("media_file is not <id>.wav beside the sidecar; not attached");
                audio_expected = wav = false;
            }
        } else {
            audio_expected = doc.text("status").value_or("") != "transcript only";
        }
        if (audio_expected && !wav) {
            // The audio may still come; after the grace, the metadata alone.
            if (!aged(rel + sidecar, js, orphan_grace_ms_, now)) return o;
            defects.emplace_back("recording missing from the export");
            host().count("audio_missing");
        }

        sb::Record rec = host().record();
        if (vfc_)
            map_vfc(doc, rec, defects);
        else
            map_metadata(doc, rec, defects);
        rec.meta(SB_META_EXTERNAL_ID, *ext);
        o.entry.status = kEmitted;
        if (*ext != stem) o.entry.external_id = *ext;
        if (wav) {
            std::string target = base + ".wav";
            if (copy_audio_) {
                std::error_code ec;
                fs::create_directories(audio_dir_, ec);
                o.copy = audio_dir_ + "/" + stem + ".wav";
            }
            Hashed hs = hash_file(target, o.copy);
            if (hs.err) {
                o.copy.clear();
                if (hs.err != ENOENT) read_error(rel + ".wav (" + hs.step + ")", hs.err);
                return Outcome{};
            }
            if (copy_audio_) {
                target = o.copy;
                o.entry.status = kCopied;
                host().count("audio_copied");
            }
            std::string uri = file_uri(target);
            std::string media_type = "audio/wav";
            if (auto mt = doc.text("media_type"); vfc_ && mt && valid_media_type(*mt)) media_type = *mt;
            sb_attachment a{};
            a.struct_size = sizeof a;
            a.name = "recording";
            a.uri = uri.c_str();
            a.media_type = media_type.c_str();
            a.size = static_cast<std::int64_t>(hs.size);
            a.sha256 = hs.hex.c_str();
            a.category = "media.voice";
            rec.attach(a);
        }
        if (text) take_transcript(rel, base + "_text.json", rec, defects);
        for (std::size_t k = 0; k < defects.size(); ++k)
            rec.set("defects[" + std::to_string(k) + "]", defects[k], kDefect);
        o.kind = Outcome::Emit;
        o.record.emplace(std::move(rec));
        return o;
    }

    // MODELLED: the text export's shape is not public; every string under a
    // key "text" or "transcript", in document order, one per line.
    void take_transcript(const std::string& rel, const std::string& path, sb::Record& rec,
                         std::vector<std::string>& defects) {
        FileRead r = read_head(path, max_json_ + 1);
        if (r.err) {
            if (r.err != ENOENT) read_error(rel + "_text.json", r.err);
            defects.emplace_back("transcript export unreadable");
            return;
        }
        if (r.bytes.size() > max_json_) {
            r.bytes.resize(std::min(max_json_, kQuarantineHead));
            quarantine(r.bytes, "transcript larger than max_json (" + std::to_string(r.size) + " bytes)",
                       rel + "_text.json");
            defects.emplace_back("transcript export larger than max_json (quarantined)");
            return;
        }
        std::string_view t = r.bytes;
        if (t.substr(0, 3) == "\xEF\xBB\xBF") t.remove_prefix(3);
        std::string out;
        sb::detail::JsonError err;
        bool ok = sb::detail::json_leaves(
            t,
            [&](std::string_view path, const sb_value& v) {
                if (v.type != SB_VALUE_STRING || v.len == 0) return true;
                std::size_t dot = path.rfind('.');
                std::string_view last = dot == std::string_view::npos ? path : path.substr(dot + 1);
                if (last != "text" && last != "transcript") return true;
                if (!out.empty()) out += '\n';
                out.append(v.str, v.len);
                return true;
            },
            err);
        if (!ok) {
            quarantine(r.bytes, "malformed transcript JSON (" + err.text() + ")", rel + "_text.json");
            defects.emplace_back("transcript export unreadable (quarantined)");
            return;
        }
        if (out.find_first_not_of(" \t\r\n") == std::string::npos) return;
        rec.set("content.text", out, "content.free_text");
        host().count("transcripts");
    }

    // The sidecar's metadata, mapped to docs/records.md (key names MODELLED:
    // see README). Values that are "" (not calculated) are left out.
    void map_metadata(const Doc& doc, sb::Record& rec, std::vector<std::string>& defects) {
        rec.meta(SB_META_CHANNEL, "phone");
        auto put = [&](const std::string& path, const std::optional<std::string>& v, const char* cat) {
            if (v) rec.set(path, *v, cat);
        };
        const std::string m = "metadata.";
        std::optional<std::int64_t> start_ms;
        if (auto start = doc.text(m + "startTimeGmt")) {
            if (sb::detail::is_rfc3339(*start)) {
                rec.meta(SB_META_OCCURRED_AT, *start);
                rec.set("call.started_at", *start, kCall);
                start_ms = sb::detail::parse_time(*start);
            } else {
                defects.emplace_back("metadata.startTimeGmt is not an RFC 3339 time");
            }
        }
        // Duration: the recording's length (-1 when transcript only), else the
        // span between the local start and end times.
        std::optional<std::int64_t> span_ms;
        auto ls = doc.text(m + "localStartTime"), le = doc.text(m + "localEndTime");
        if (ls && le) {
            auto a = local_ms(*ls), b = local_ms(*le);
            if (a && b && *b >= *a) span_ms = *b - *a;
        }
        std::optional<std::int64_t> duration_s;
        if (auto len = doc.number("length"); len && *len >= 0 && *len < 1e9)
            duration_s = std::llround(*len);
        else if (span_ms)
            duration_s = *span_ms / 1000;
        if (duration_s) rec.set("call.duration_s", *duration_s, kCall);
        if (start_ms) {
            std::optional<std::int64_t> end = span_ms ? std::optional(*start_ms + *span_ms)
                                              : duration_s ? std::optional(*start_ms + *duration_s * 1000)
                                                           : std::nullopt;
            if (end) rec.set("call.ended_at", sb::format_time(*end), kCall);
        }
        put("call.status", doc.text("status"), kCall);

        bool outbound = false;
        if (auto d = doc.integer(m + "direction")) {
            static const char* names[] = {"unknown", "inbound", "outbound", "internal"};
            if (*d >= 0 && *d <= 3) {
                rec.set("call.direction", names[*d], kCall);
                outbound = *d == 2;
            } else {
                defects.emplace_back("metadata.direction is not 0-3");
            }
        }
        put("call.ani", doc.text(m + "ani"), kPhone);
        // On an outbound call the dialled number is the citizen's.
        put("call.dnis", doc.text(m + "dnis"), outbound ? kPhone : kCall);
        put("agent.id", doc.text(m + "employeeId"), "staff.id");
        put("agent.name", doc.text(m + "employeeName"), "staff.name");

        for (const auto& p : queue_from_)
            if (auto q = doc.text(p)) {
                rec.set("hints.queue", *q, kHint);
                break;
            }
        put("hints.organisation", doc.text(m + "employeeOrgId"), kHint);
        put("hints.ivr_option", doc.text(m + "customData.IvrOption"), kHint);

        map_pci(doc, rec);

        auto media = doc.text("mediaId"), txn = doc.text(m + "transactionId");
        put("vendor.media_id", media, kVendor);
        if (txn && txn != media) put("vendor.transaction_id", txn, kVendor);
        put("vendor.session_id", doc.text(m + "sessionId"), kVendor);
        auto contact = doc.text(m + "contactId");
        put("vendor.contact_id", contact, kVendor);
        if (contact && valid_external_id(*contact)) rec.meta(SB_META_SUBJECT_REF, *contact);
    }

    // MODELLED: VFC metadata XML (vendors.md 2.2: id, modality_id, native_id,
    // native_call_id, owner_eid, location, source_* are documented; the
    // destination, time, direction, duration, user and media keys are our
    // guess). Times are read as UTC.
    void map_vfc(const Doc& doc, sb::Record& rec, std::vector<std::string>& defects) {
        rec.meta(SB_META_CHANNEL, "phone");
        auto put = [&](const std::string& path, const std::optional<std::string>& v, const char* cat) {
            if (v) rec.set(path, *v, cat);
        };
        std::optional<std::int64_t> start_ms, end_ms;
        for (const char* key : {"start_time", "end_time"}) {
            auto raw = doc.text(key);
            if (!raw) continue;
            auto t = vfc_time(*raw);
            if (!t) {
                defects.emplace_back(std::string(key) + " is not a time");
                continue;
            }
            bool start = key[0] == 's';
            if (start) rec.meta(SB_META_OCCURRED_AT, *t);
            rec.set(start ? "call.started_at" : "call.ended_at", *t, kCall);
            (start ? start_ms : end_ms) = sb::detail::parse_time(*t);
        }
        if (auto d = doc.integer("duration"); d && *d >= 0)
            rec.set("call.duration_s", *d, kCall);
        else if (start_ms && end_ms && *end_ms >= *start_ms)
            rec.set("call.duration_s", (*end_ms - *start_ms) / 1000, kCall);
        bool outbound = false;
        if (auto d = doc.text("direction")) {
            std::string v = *d;
            for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            const char* dir = (v == "in" || v == "inbound" || v == "incoming") ? "inbound"
                              : (v == "out" || v == "outbound" || v == "outgoing") ? "outbound"
                              : v == "internal" ? "internal"
                                                : "unknown";
            rec.set("call.direction", dir, kCall);
            outbound = std::string_view(dir) == "outbound";
        }
        put("call.modality", doc.text("modality_id"), kCall);
        // A withheld number is not a number.
        if (auto ani = doc.text("source_caller_id")) {
            std::string v = *ani;
            for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (v == "anonymous" || v == "withheld" || v == "private" || v == "unknown")
                rec.set("call.ani_withheld", true, kCall);
            else
                rec.set("call.ani", *ani, kPhone);
        }
        put("call.dnis", doc.text("destination_caller_id"), outbound ? kPhone : kCall);
        put("agent.id", doc.text("owner_eid"), "staff.id");
        put("agent.name", doc.text("user_name"), "staff.name");
        put("hints.queue", doc.text("destination_name"), kHint);
        put("vendor.media_id", doc.text("id"), kVendor);
        put("vendor.native_id", doc.text("native_id"), kVendor);
        auto call = doc.text("native_call_id");
        put("vendor.call_id", call, kVendor);
        if (call && valid_external_id(*call)) rec.meta(SB_META_SUBJECT_REF, *call);
    }

    static bool valid_media_type(std::string_view s) {
        std::size_t slash = s.find('/');
        if (slash == std::string_view::npos || slash == 0 || slash + 1 >= s.size() || s.size() > 100)
            return false;
        for (char c : s)
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '/' || c == '.' || c == '+' ||
                  c == '-'))
                return false;
        return true;
    }

    // Contact_Pause_Record / Contact_Resume_Record tags -> call.pci[i]. Other
    // tags are not taken (their content is unknown).
    void map_pci(const Doc& doc, sb::Record& rec) {
        struct Tag {
            std::optional<std::string> name, source;
            std::optional<double> offset;
        };
        std::map<long, Tag> tags;
        const std::string_view prefix = "metadata.tags[";
        for (const auto& [path, v] : doc.leaves()) {
            if (path.compare(0, prefix.size(), prefix) != 0) continue;
            std::size_t close = path.find("].", prefix.size());
            if (close == std::string::npos) continue;
            std::string idx = path.substr(prefix.size(), close - prefix.size());
            if (!all_digits(idx) || idx.size() > 6) continue;
            std::string key = path.substr(close + 2);
            Tag& t = tags[std::stol(idx)];
            if (key == "name" && v.type == SB_VALUE_STRING) t.name = v.s;
            if (key == "source" && v.type == SB_VALUE_STRING && !v.s.empty()) t.source = v.s;
            if (key == "offsetSeconds" && (v.type == SB_VALUE_INT || v.type == SB_VALUE_FLOAT))
                t.offset = v.type == SB_VALUE_INT ? static_cast<double>(v.i) : v.f;
        }
        std::size_t n = 0;
        std::uint64_t ignored = 0;
        for (const auto& [k, t] : tags) {
            const char* event = !t.name ? nullptr
                                : *t.name == "Contact_Pause_Record" ? "pause"
                                : *t.name == "Contact_Resume_Record" ? "resume"
                                                                     : nullptr;
            if (!event) {
                ++ignored;
                continue;
            }
            std::string p = "call.pci[" + std::to_string(n++) + "].";
            rec.set(p + "event", event, kPci);
            if (t.offset) rec.set(p + "offset_s", *t.offset, kPci);
            if (t.source) rec.set(p + "source", *t.source, kPci);
        }
        if (ignored) host().count("tags_ignored", ignored);
    }

    // --- reconciliation ------------------------------------------------------------

    // Items still in export_dir although their hour ended more than
    // vendor_retention ago: the council's Verint purge rule should have
    // removed them. Ids only in the log.
    void reconcile() {
        const std::int64_t cutoff = host().now_ms() - vendor_retention_ms_;
        const std::string last = hour_name(cutoff - kHourMs); // hours that ended by cutoff
        int err = 0;
        auto hours = list_hours(
            export_dir_,
            [&](std::string_view p) { return p <= std::string_view(last).substr(0, p.size()); },
            err);
        host().count("reconcile_runs");
        if (err) {
            host().warn("reconcile: cannot list export_dir: " + errno_text(err));
            return;
        }
        std::uint64_t stale = 0;
        std::string oldest, oldest_hour;
        for (const auto& h : hours) {
            int e = 0;
            std::set<std::string> stems;
            for (const auto& n : list_dir(export_dir_ + "/" + h, false, e))
                if (auto fn = classify(n, vfc_)) stems.insert(fn->stem);
            if (stems.empty()) continue;
            stale += stems.size();
            if (oldest.empty()) {
                oldest = *stems.begin();
                oldest_hour = h;
            }
        }
        host().gauge("stale_exports", static_cast<double>(stale));
        if (stale)
            host().warn("stale exports: " + std::to_string(stale) +
                        " interaction(s) older than vendor_retention still in export_dir; oldest " +
                        oldest + " (hour " + oldest_hour +
                        "); check the Verint purge rule");
        else
            host().debug("reconcile: no interaction older than vendor_retention in export_dir");
    }

    // --- logging ----------------------------------------------------------------------

    void quarantine(std::string_view bytes, const std::string& why, const std::string& ref) {
        sb::Status s = host().quarantine(bytes, why, ref.c_str());
        host().count("quarantined");
        if (s != SB_OK) host().count("quarantine_failed");
        if (logs_this_poll_++ < kLogsPerPoll)
            host().warn("quarantined " + ref + ": " + why);
        else if (logs_this_poll_ == kLogsPerPoll + 1)
            host().warn("more items quarantined in this poll; see the quarantined counter");
    }

    void read_error(const std::string& rel, int e) {
        host().count("read_errors");
        if (logs_this_poll_++ < kLogsPerPoll) host().error("cannot read " + rel + ": " + errno_text(e));
    }

    // Configuration.
    const std::string export_dir_;
    const bool vfc_;
    const std::int64_t settle_ms_, orphan_grace_ms_, close_after_ms_, max_age_ms_;
    const bool copy_audio_, delete_exported_;
    const std::int64_t vendor_retention_ms_, reconcile_ms_;
    const std::size_t max_json_;
    const std::vector<std::string> queue_from_;
    const std::size_t batch_;
    const std::string audio_dir_;

    // poll (its thread) and erase (the retention thread) share these.
    std::mutex mu_;
    std::string watermark_;                 // last closed hour, "" if none
    std::set<std::string> open_;            // hours with a stored hour key
    std::map<std::string, Hour> hours_;     // their items
    std::map<std::string, std::pair<std::string, std::string>> index_; // external id -> (hour, file id)
    std::map<std::string, Seen> seen_;      // files waiting to settle
    std::uint64_t generation_ = 0;
    bool dir_error_logged_ = false;
    std::size_t last_skipped_ = 0;
    int logs_this_poll_ = 0;
};

} // namespace

SB_PLUGIN(VerintSource)
