// Tolerant RFC 5322 / MIME parsing: see mime.hpp.
#include "mime.hpp"

#include <iconv.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace sbmail {

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD"; // U+FFFD
constexpr std::size_t kMaxDecodedHeader = 16384;          // bytes of a header decoded

bool is_wsp(char c) { return c == ' ' || c == '\t'; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
char lower_char(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = lower_char(c);
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower_char(a[i]) != lower_char(b[i])) return false;
    return true;
}

bool is_ascii(std::string_view s) {
    for (unsigned char c : s)
        if (c >= 0x80) return false;
    return true;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        out += kReplacement;
    } else if (cp < 0x80) {
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
}

// Collapses whitespace runs (folding leftovers, tabs, line breaks) to one
// space and trims: for header values shown as one line.
std::string collapse_space(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    bool space = false;
    for (char c : s) {
        if (is_space(c)) {
            space = true;
            continue;
        }
        if (space && !out.empty()) out += ' ';
        space = false;
        out += c;
    }
    return out;
}

// A charset name from the message, fit to appear in a defect: [A-Za-z0-9._:-],
// at most 40 bytes.
std::string charset_label(std::string_view cs) {
    std::string out;
    for (char c : cs.substr(0, 40))
        out += (is_alpha(c) || is_digit(c) || c == '.' || c == '_' || c == ':' || c == '-') ? c : '?';
    return out.empty() ? "(empty)" : out;
}

// Charset name normalised: lower case, quotes and an RFC 2231 "*lang" removed.
std::string normalise_charset(std::string_view cs) {
    cs = trim(cs);
    if (cs.size() >= 2 && cs.front() == '"' && cs.back() == '"') cs = trim(cs.substr(1, cs.size() - 2));
    if (auto star = cs.find('*'); star != std::string_view::npos) cs = cs.substr(0, star);
    return lower(cs);
}

// Windows-1252 0x80..0x9F (0 = undefined); the rest of the upper half is Latin-1.
constexpr std::uint16_t kCp1252High[32] = {
    0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0,      0x017D, 0,      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};

enum class SingleByte { Cp1252, Latin9 };

std::string decode_single_byte(std::string_view bytes, SingleByte table, std::size_t& bad) {
    std::string out;
    out.reserve(bytes.size() + bytes.size() / 4);
    for (unsigned char c : bytes) {
        std::uint32_t cp = c;
        if (c >= 0x80 && c <= 0x9F) {
            cp = kCp1252High[c - 0x80];
        } else if (table == SingleByte::Latin9) {
            switch (c) {
            case 0xA4: cp = 0x20AC; break;
            case 0xA6: cp = 0x0160; break;
            case 0xA8: cp = 0x0161; break;
            case 0xB4: cp = 0x017D; break;
            case 0xB8: cp = 0x017E; break;
            case 0xBC: cp = 0x0152; break;
            case 0xBD: cp = 0x0153; break;
            case 0xBE: cp = 0x0178; break;
            default: break;
            }
        }
        if (cp == 0 && c != 0) ++bad;
        if (c == 0) ++bad;
        append_utf8(out, cp);
    }
    return out;
}

// Charsets handed to iconv. An allow-list, not whatever the sender names: the
// charset is attacker-chosen, and some rarely used iconv converters have had
// memory-safety bugs (e.g. CVE-2024-2961 in ISO-2022-CN-EXT).
bool iconv_allowed(const std::string& cs) {
    static const char* const kAllowed[] = {
        "iso-8859-2", "iso-8859-3", "iso-8859-4", "iso-8859-5", "iso-8859-6", "iso-8859-7",
        "iso-8859-8", "iso-8859-9", "iso-8859-10", "iso-8859-13", "iso-8859-14", "iso-8859-16",
        "windows-1250", "windows-1251", "windows-1253", "windows-1254", "windows-1255",
        "windows-1256", "windows-1257", "windows-1258", "cp1250", "cp1251", "cp1253", "cp1254",
        "cp1255", "cp1256", "cp1257", "cp1258", "koi8-r", "koi8-u", "utf-16", "utf-16le",
        "utf-16be", "gb2312", "gbk", "gb18030", "big5", "shift_jis", "cp932", "euc-jp",
        "iso-2022-jp", "euc-kr", "cp949", "tis-620", "windows-874", "ibm850", "cp850", "ibm437",
        "cp437", "macintosh", "iso-8859-8-i"};
    return std::any_of(std::begin(kAllowed), std::end(kAllowed),
                       [&](const char* a) { return cs == a; });
}

// Converts with iconv; invalid sequences become U+FFFD (one per skipped
// byte). nullopt if iconv does not know the charset.
std::optional<std::string> iconv_to_utf8(std::string_view bytes, const std::string& cs,
                                         std::size_t& bad) {
    std::string from = cs == "ks_c_5601-1987" ? "cp949" : cs == "iso-8859-8-i" ? "iso-8859-8" : cs;
    iconv_t cd = ::iconv_open("UTF-8", from.c_str());
    if (cd == reinterpret_cast<iconv_t>(-1)) return std::nullopt;
    std::string out;
    std::string in(bytes);
    char* src = in.data();
    std::size_t left = in.size();
    char buf[4096];
    while (left > 0) {
        char* dst = buf;
        std::size_t room = sizeof buf;
        std::size_t r = ::iconv(cd, &src, &left, &dst, &room);
        out.append(buf, static_cast<std::size_t>(dst - buf));
        if (r == static_cast<std::size_t>(-1)) {
            if (errno == E2BIG) continue;
            // EILSEQ or EINVAL (truncated sequence at the end): skip a byte.
            out += kReplacement;
            ++bad;
            ++src;
            --left;
            ::iconv(cd, nullptr, nullptr, nullptr, nullptr);
        }
    }
    char* dst = buf;
    std::size_t room = sizeof buf;
    ::iconv(cd, nullptr, nullptr, &dst, &room); // flush shift state
    out.append(buf, static_cast<std::size_t>(dst - buf));
    ::iconv_close(cd);
    return out;
}

struct Line {
    std::size_t start, end, next; // [start, end) without CR/LF; next line at `next`
};

// The line starting at `pos`.
Line line_at(std::string_view data, std::size_t pos) {
    std::size_t nl = data.find('\n', pos);
    Line l{pos, nl == std::string_view::npos ? data.size() : nl,
           nl == std::string_view::npos ? data.size() : nl + 1};
    if (l.end > l.start && data[l.end - 1] == '\r') --l.end;
    return l;
}

// Removes (comments), respecting quoted strings and nesting.
std::string strip_comments(std::string_view s) {
    std::string out;
    int depth = 0;
    bool quoted = false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (quoted) {
            out += c;
            if (c == '\\' && i + 1 < s.size()) out += s[++i];
            else if (c == '"') quoted = false;
            continue;
        }
        if (depth > 0) {
            if (c == '\\') ++i;
            else if (c == '(') ++depth;
            else if (c == ')') --depth;
            continue;
        }
        if (c == '(') {
            depth = 1;
            out += ' ';
            continue;
        }
        if (c == '"') quoted = true;
        out += c;
    }
    return out;
}

// "quoted \"string\"" -> quoted "string"; other text is kept as it is.
std::string unquote_words(std::string_view s) {
    std::string out;
    bool quoted = false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (c == '"') {
            quoted = !quoted;
            continue;
        }
        if (quoted && c == '\\' && i + 1 < s.size()) {
            out += s[++i];
            continue;
        }
        out += c;
    }
    return out;
}

// Splits on `sep` outside quotes, comments and <angle brackets>.
std::vector<std::string_view> split_top(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    bool quoted = false;
    int comment = 0;
    bool angle = false;
    std::size_t from = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (quoted) {
            if (c == '\\') ++i;
            else if (c == '"') quoted = false;
            continue;
        }
        if (comment > 0) {
            if (c == '\\') ++i;
            else if (c == '(') ++comment;
            else if (c == ')') --comment;
            continue;
        }
        if (c == '"') quoted = true;
        else if (c == '(') comment = 1;
        else if (c == '<') angle = true;
        else if (c == '>') angle = false;
        else if (c == sep && !angle) {
            out.push_back(s.substr(from, i - from));
            from = i + 1;
        }
    }
    out.push_back(s.substr(from));
    return out;
}

// Decodes the text of one RFC 2047 encoded-word.
std::string decode_q_word(std::string_view text, bool& clean) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '_') {
            out += ' ';
        } else if (c == '=' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 &&
                   hex_value(text[i + 2]) >= 0) {
            out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
            i += 2;
        } else {
            if (c == '=') clean = false;
            out += c;
        }
    }
    return out;
}

} // namespace

// --- Defects ----------------------------------------------------------------

void Defects::add(std::string text) {
    if (std::find(list_.begin(), list_.end(), text) != list_.end()) return;
    if (list_.size() + 1 >= kMax) {
        if (!overflow_) list_.push_back("more defects not listed");
        overflow_ = true;
        return;
    }
    list_.push_back(std::move(text));
}

bool Defects::has(std::string_view needle) const {
    return std::any_of(list_.begin(), list_.end(),
                       [&](const std::string& d) { return d.find(needle) != std::string::npos; });
}

// --- charsets -----------------------------------------------------------------

std::string sanitize_utf8(std::string_view s, std::size_t* replaced) {
    std::string out;
    out.reserve(s.size());
    std::size_t bad = 0;
    std::size_t i = 0;
    const std::size_t n = s.size();
    auto cont = [&](std::size_t k, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
        if (k >= n) return false;
        auto c = static_cast<unsigned char>(s[k]);
        return c >= lo && c <= hi;
    };
    while (i < n) {
        auto c = static_cast<unsigned char>(s[i]);
        std::size_t len = 0;
        if (c == 0) {
            len = 0;
        } else if (c < 0x80) {
            len = 1;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = cont(i + 1) ? 2 : 0;
        } else if (c == 0xE0) {
            len = cont(i + 1, 0xA0, 0xBF) && cont(i + 2) ? 3 : 0;
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
            len = cont(i + 1) && cont(i + 2) ? 3 : 0;
        } else if (c == 0xED) {
            len = cont(i + 1, 0x80, 0x9F) && cont(i + 2) ? 3 : 0;
        } else if (c == 0xF0) {
            len = cont(i + 1, 0x90, 0xBF) && cont(i + 2) && cont(i + 3) ? 4 : 0;
        } else if (c >= 0xF1 && c <= 0xF3) {
            len = cont(i + 1) && cont(i + 2) && cont(i + 3) ? 4 : 0;
        } else if (c == 0xF4) {
            len = cont(i + 1, 0x80, 0x8F) && cont(i + 2) && cont(i + 3) ? 4 : 0;
        }
        if (len == 0) {
            out += kReplacement;
            ++bad;
            ++i;
        } else {
            out.append(s.data() + i, len);
            i += len;
        }
    }
    if (replaced) *replaced = bad;
    return out;
}

std::string to_utf8(std::string_view bytes, std::string_view charset, Defects& defects,
                    const std::string& where) {
    std::string cs = normalise_charset(charset);
    std::size_t bad = 0;
    std::string out;
    if (cs.empty() || cs == "us-ascii" || cs == "ascii" || cs == "ansi_x3.4-1968" ||
        cs == "iso646-us" || cs == "us") {
        if (is_ascii(bytes) && bytes.find('\0') == std::string_view::npos) return std::string(bytes);
        if (!is_ascii(bytes))
            defects.add(where + "undeclared 8-bit bytes (charset " +
                        (cs.empty() ? std::string("not given") : charset_label(cs)) +
                        "), read as UTF-8");
        out = sanitize_utf8(bytes, &bad);
    } else if (cs == "utf-8" || cs == "utf8") {
        out = sanitize_utf8(bytes, &bad);
    } else if (cs == "iso-8859-1" || cs == "latin1" || cs == "latin-1" || cs == "l1" ||
               cs == "iso_8859-1" || cs == "iso8859-1" || cs == "iso-ir-100" || cs == "cp819" ||
               cs == "ibm819" || cs == "windows-1252" || cs == "cp1252" || cs == "x-cp1252") {
        // As browsers do (WHATWG): Latin-1 labels are read as Windows-1252,
        // whose 0x80..0x9F are the characters senders meant (€, ’, –).
        out = decode_single_byte(bytes, SingleByte::Cp1252, bad);
    } else if (cs == "iso-8859-15" || cs == "latin-9" || cs == "latin9" || cs == "iso8859-15") {
        out = decode_single_byte(bytes, SingleByte::Latin9, bad);
    } else {
        std::optional<std::string> converted;
        if (iconv_allowed(cs) || cs == "ks_c_5601-1987") converted = iconv_to_utf8(bytes, cs, bad);
        if (!converted) {
            defects.add(where + "unknown charset " + charset_label(cs) +
                        ": bytes kept (as UTF-8 where valid)");
            out = sanitize_utf8(bytes, &bad);
        } else {
            out = sanitize_utf8(*converted); // iconv output is UTF-8; NULs replaced
        }
    }
    if (bad)
        defects.add(where + "invalid bytes for charset " +
                    (cs.empty() ? std::string("us-ascii") : charset_label(cs)) +
                    " replaced by U+FFFD");
    return out;
}

// --- transfer encodings ---------------------------------------------------------

std::string decode_base64(std::string_view in, bool* clean) {
    std::string out;
    out.reserve(in.size() / 4 * 3);
    std::uint32_t acc = 0;
    int n = 0;
    bool ok = true;
    auto flush = [&] {
        if (n == 2) out += static_cast<char>(acc >> 4);
        else if (n == 3) {
            out += static_cast<char>(acc >> 10);
            out += static_cast<char>((acc >> 2) & 0xFF);
        } else if (n == 1) ok = false; // 6 bits make no byte
        acc = 0;
        n = 0;
    };
    for (char c : in) {
        int v;
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '+') v = 62;
        else if (c == '/') v = 63;
        else if (c == '=') {
            flush(); // padding ends a quantum; text after it is read on (concatenated blocks)
            continue;
        } else {
            if (!is_space(c)) ok = false;
            continue;
        }
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        if (++n == 4) {
            out += static_cast<char>(acc >> 16);
            out += static_cast<char>((acc >> 8) & 0xFF);
            out += static_cast<char>(acc & 0xFF);
            acc = 0;
            n = 0;
        }
    }
    flush();
    if (clean) *clean = ok;
    return out;
}

std::string decode_quoted_printable(std::string_view in, bool* clean) {
    std::string out;
    out.reserve(in.size());
    bool ok = true;
    std::size_t pos = 0;
    while (pos < in.size()) {
        Line l = line_at(in, pos);
        std::string_view line = in.substr(l.start, l.end - l.start);
        bool had_break = l.next > l.end; // the line ended with a line break
        // Trailing whitespace is not part of the data (RFC 2045 6.7 rule 3).
        while (!line.empty() && is_wsp(line.back())) line.remove_suffix(1);
        bool soft = !line.empty() && line.back() == '=';
        if (soft) line.remove_suffix(1);
        for (std::size_t i = 0; i < line.size(); ++i) {
            char c = line[i];
            if (c == '=' && i + 2 < line.size() && hex_value(line[i + 1]) >= 0 &&
                hex_value(line[i + 2]) >= 0) {
                out += static_cast<char>(hex_value(line[i + 1]) * 16 + hex_value(line[i + 2]));
                i += 2;
            } else {
                if (c == '=') ok = false;
                out += c;
            }
        }
        if (had_break && !soft) out += "\r\n";
        pos = l.next;
    }
    if (clean) *clean = ok;
    return out;
}

// --- headers ----------------------------------------------------------------------

std::vector<Header> parse_headers(std::string_view data, std::size_t& body, Defects& defects,
                                  const std::string& where) {
    std::vector<Header> headers;
    auto done = [&](std::size_t at) {
        body = at;
        for (auto& h : headers) h.value = std::string(trim(h.value));
        return headers;
    };
    std::size_t pos = 0;
    bool first = true;
    while (pos < data.size()) {
        Line l = line_at(data, pos);
        std::string_view line = data.substr(l.start, l.end - l.start);
        if (line.empty()) return done(l.next); // the blank line: the body follows
        if (is_wsp(line.front())) {
            if (headers.empty())
                defects.add(where + "header continuation line without a header");
            else
                headers.back().value += line; // unfolding keeps the whitespace
            pos = l.next;
            first = false;
            continue;
        }
        std::size_t colon = line.find(':');
        std::string_view name = colon == std::string_view::npos ? std::string_view()
                                                                : line.substr(0, colon);
        while (!name.empty() && is_wsp(name.back())) name.remove_suffix(1);
        bool valid = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
            return c > 32 && c < 127 && c != ':';
        });
        if (!valid && first && line.substr(0, 5) == "From ") { // an mbox separator
            defects.add(where + "mbox From_ line before the headers");
            pos = l.next;
            first = false;
            continue;
        }
        first = false;
        if (!valid) {
            // Not a header: the body started without its blank line.
            defects.add(where + "missing blank line between headers and body");
            return done(l.start);
        }
        headers.push_back({std::string(name), std::string(line.substr(colon + 1))});
        pos = l.next;
    }
    return done(data.size());
}

std::string decode_header_text(std::string_view raw, Defects& defects, const std::string& header) {
    // Real headers are far shorter; the cap keeps the scan for encoded-words
    // cheap on a hostile one.
    if (raw.size() > kMaxDecodedHeader) {
        raw = raw.substr(0, kMaxDecodedHeader);
        defects.add((header.empty() ? std::string("header") : header + " header") + " cut at " +
                    std::to_string(kMaxDecodedHeader) + " bytes");
    }
    std::string out;
    std::string ew_charset, ew_bytes; // adjacent encoded-words, joined before conversion
    bool in_ew = false;
    bool ew_clean = true;
    auto flush_ew = [&] {
        if (!in_ew) return;
        out += to_utf8(ew_bytes, ew_charset, defects, header.empty() ? "" : header + " header: ");
        ew_bytes.clear();
        in_ew = false;
    };
    auto plain = [&](std::string_view s) {
        if (s.empty()) return;
        flush_ew();
        if (is_ascii(s)) {
            out += s;
            return;
        }
        std::size_t bad = 0;
        out += sanitize_utf8(s, &bad); // UTF-8 in headers is allowed (RFC 6532)
        if (bad)
            defects.add((header.empty() ? std::string("header") : header + " header") +
                        ": 8-bit bytes that are not UTF-8 replaced by U+FFFD");
    };
    std::size_t i = 0;
    bool last_was_ew = false;
    while (i < raw.size()) {
        std::size_t at = raw.find("=?", i);
        if (at == std::string_view::npos) break;
        // =?charset?E?text?=
        std::size_t q1 = raw.find('?', at + 2);
        bool ok = q1 != std::string_view::npos && q1 > at + 2 && q1 - at - 2 <= 64 &&
                  q1 + 2 < raw.size() && raw[q1 + 2] == '?' &&
                  (raw[q1 + 1] == 'B' || raw[q1 + 1] == 'b' || raw[q1 + 1] == 'Q' || raw[q1 + 1] == 'q');
        std::size_t end = ok ? raw.find("?=", q1 + 3) : std::string_view::npos;
        std::string_view charset, text;
        if (ok && end != std::string_view::npos) {
            charset = raw.substr(at + 2, q1 - at - 2);
            text = raw.substr(q1 + 3, end - q1 - 3);
            auto bad_char = [](char c) { return is_space(c); };
            if (std::any_of(charset.begin(), charset.end(), bad_char) ||
                std::any_of(text.begin(), text.end(), bad_char))
                ok = false;
        } else {
            ok = false;
        }
        if (!ok) {
            plain(raw.substr(i, at + 2 - i));
            last_was_ew = false;
            i = at + 2;
            continue;
        }
        std::string_view gap = raw.substr(i, at - i);
        bool gap_is_space = std::all_of(gap.begin(), gap.end(), is_space);
        if (!(last_was_ew && gap_is_space)) plain(gap); // space between words is dropped
        bool clean = true;
        char enc = lower_char(raw[q1 + 1]);
        std::string bytes = enc == 'b' ? decode_base64(text, &clean) : decode_q_word(text, clean);
        if (!clean) ew_clean = false;
        std::string cs = normalise_charset(charset);
        if (in_ew && cs != ew_charset) flush_ew();
        if (!in_ew) {
            ew_charset = cs;
            in_ew = true;
        }
        ew_bytes += bytes;
        last_was_ew = true;
        i = end + 2;
    }
    plain(raw.substr(std::min(i, raw.size())));
    flush_ew();
    if (!ew_clean)
        defects.add((header.empty() ? std::string("header") : header + " header") +
                    ": malformed encoded-word");
    return out;
}

HeaderParams parse_header_params(std::string_view raw, Defects& defects, const std::string& where) {
    HeaderParams hp;
    if (raw.size() > kMaxDecodedHeader) {
        raw = raw.substr(0, kMaxDecodedHeader);
        defects.add(where + "header parameters cut at " + std::to_string(kMaxDecodedHeader) + " bytes");
    }
    auto pieces = split_top(raw, ';');
    hp.value = lower(collapse_space(strip_comments(pieces.front())));
    hp.value.erase(std::remove(hp.value.begin(), hp.value.end(), ' '), hp.value.end());
    struct Section {
        bool encoded;
        std::string value;
    };
    std::map<std::string, std::map<int, Section>> extended; // RFC 2231
    for (std::size_t k = 1; k < pieces.size(); ++k) {
        std::string_view piece = trim(pieces[k]);
        if (piece.empty()) continue;
        std::size_t eq = piece.find('=');
        if (eq == std::string_view::npos) {
            defects.add(where + "malformed header parameter");
            continue;
        }
        std::string name = lower(trim(piece.substr(0, eq)));
        std::string_view v = trim(piece.substr(eq + 1));
        std::string value;
        if (!v.empty() && v.front() == '"') {
            bool closed = false;
            for (std::size_t i = 1; i < v.size(); ++i) {
                if (v[i] == '\\' && i + 1 < v.size()) {
                    value += v[++i];
                } else if (v[i] == '"') {
                    closed = true;
                    break;
                } else {
                    value += v[i];
                }
            }
            if (!closed) defects.add(where + "unterminated quoted parameter");
        } else {
            value = std::string(v);
        }
        std::size_t star = name.find('*');
        if (star == std::string::npos) {
            hp.params.emplace(name, std::move(value)); // the first one wins
            continue;
        }
        // name*  |  name*N  |  name*N*
        std::string base = name.substr(0, star);
        std::string_view rest = std::string_view(name).substr(star + 1);
        bool encoded = false;
        int index = 0;
        if (rest.empty()) {
            encoded = true;
        } else {
            if (rest.back() == '*') {
                encoded = true;
                rest.remove_suffix(1);
            }
            if (rest.empty() || rest.size() > 3 ||
                !std::all_of(rest.begin(), rest.end(), is_digit)) {
                defects.add(where + "malformed RFC 2231 parameter");
                continue;
            }
            index = std::stoi(std::string(rest));
        }
        extended[base].emplace(index, Section{encoded, std::move(value)});
    }
    for (auto& [base, sections] : extended) {
        std::string bytes, charset;
        bool first = true;
        for (auto& [index, s] : sections) {
            std::string_view v = s.value;
            if (first && s.encoded) {
                // charset'language'value
                std::size_t a1 = v.find('\'');
                std::size_t a2 = a1 == std::string_view::npos ? a1 : v.find('\'', a1 + 1);
                if (a2 != std::string_view::npos) {
                    charset = std::string(v.substr(0, a1));
                    v = v.substr(a2 + 1);
                } else {
                    defects.add(where + "RFC 2231 parameter without charset");
                }
            }
            first = false;
            if (!s.encoded) {
                bytes += v;
                continue;
            }
            for (std::size_t i = 0; i < v.size(); ++i) {
                if (v[i] == '%' && i + 2 < v.size() && hex_value(v[i + 1]) >= 0 &&
                    hex_value(v[i + 2]) >= 0) {
                    bytes += static_cast<char>(hex_value(v[i + 1]) * 16 + hex_value(v[i + 2]));
                    i += 2;
                } else {
                    bytes += v[i];
                }
            }
        }
        hp.params[base] = to_utf8(bytes, charset.empty() ? "utf-8" : charset, defects, where);
    }
    // RFC 2047 words in file names are not standard, but common.
    for (const char* key : {"name", "filename"}) {
        auto it = hp.params.find(key);
        if (it != hp.params.end() && extended.find(key) == extended.end())
            it->second = decode_header_text(it->second, defects, where + key);
    }
    return hp;
}

std::optional<Mailbox> parse_mailbox(std::string_view raw, Defects& defects) {
    std::vector<Mailbox> found;
    for (std::string_view element : split_top(raw, ',')) {
        std::string_view e = trim(element);
        // A group "Name: a@b, c@d;" : drop the group name and the final ';'.
        {
            auto parts = split_top(e, ':');
            if (parts.size() > 1 && parts.front().find('@') == std::string_view::npos &&
                parts.front().find('<') == std::string_view::npos)
                e = trim(e.substr(parts.front().size() + 1));
        }
        while (!e.empty() && (e.back() == ';' || is_space(e.back()))) e.remove_suffix(1);
        if (e.empty()) continue;
        Mailbox m;
        // The angle-addr, if any, outside quotes and comments.
        std::size_t lt = std::string_view::npos;
        {
            bool quoted = false;
            int comment = 0;
            for (std::size_t i = 0; i < e.size(); ++i) {
                char c = e[i];
                if (quoted) {
                    if (c == '\\') ++i;
                    else if (c == '"') quoted = false;
                } else if (comment) {
                    if (c == '\\') ++i;
                    else if (c == '(') ++comment;
                    else if (c == ')') --comment;
                } else if (c == '"') quoted = true;
                else if (c == '(') comment = 1;
                else if (c == '<') {
                    lt = i;
                    break;
                }
            }
        }
        std::string name_raw;
        if (lt != std::string_view::npos) {
            std::size_t gt = e.find('>', lt);
            if (gt == std::string_view::npos) defects.add("From header: unclosed angle bracket");
            std::string_view addr = e.substr(lt + 1, gt == std::string_view::npos ? e.npos : gt - lt - 1);
            addr = trim(addr);
            if (!addr.empty() && addr.front() == '@') { // obsolete source route "@a,@b:"
                std::size_t colon = addr.find(':');
                if (colon != std::string_view::npos) addr = addr.substr(colon + 1);
            }
            m.address = std::string(addr);
            name_raw = strip_comments(e.substr(0, lt));
        } else {
            std::string plain = strip_comments(e);
            m.address = std::string(trim(plain));
            // "addr (Name)": the comment is the display name.
            std::size_t open = e.find('(');
            std::size_t close = e.rfind(')');
            if (open != std::string_view::npos && close != std::string_view::npos && close > open)
                name_raw = std::string(e.substr(open + 1, close - open - 1));
        }
        // Whitespace inside an address is folding or obsolete CFWS.
        m.address.erase(std::remove_if(m.address.begin(), m.address.end(), is_space),
                        m.address.end());
        m.address = sanitize_utf8(m.address);
        m.name = collapse_space(decode_header_text(unquote_words(name_raw), defects, "From"));
        if (m.address.empty() && m.name.empty()) continue;
        found.push_back(std::move(m));
    }
    if (found.empty()) return std::nullopt;
    if (found.size() > 1) defects.add("From header: several addresses; the first is used");
    return found.front();
}

std::vector<std::string> parse_msg_ids(std::string_view raw) {
    std::vector<std::string> ids;
    std::string s = strip_comments(raw);
    auto keep = [&](std::string_view id) {
        std::string v;
        for (char c : id)
            if (!is_space(c)) v += c;
        if (v.empty() || v.size() > 998) return;
        if (std::any_of(v.begin(), v.end(), [](char c) {
                auto u = static_cast<unsigned char>(c);
                return u < 0x21 || u == 0x7F || c == '<' || c == '>';
            }))
            return;
        std::size_t bad = 0;
        sanitize_utf8(v, &bad);
        if (bad) return;
        ids.push_back(std::move(v));
    };
    std::size_t pos = 0;
    bool bracketed = false;
    while (true) {
        std::size_t lt = s.find('<', pos);
        if (lt == std::string::npos) break;
        std::size_t gt = s.find('>', lt);
        if (gt == std::string::npos) break;
        bracketed = true;
        keep(std::string_view(s).substr(lt + 1, gt - lt - 1));
        pos = gt + 1;
    }
    if (!bracketed) { // tolerated: ids without their brackets
        std::string_view rest = s;
        while (!rest.empty()) {
            std::size_t b = 0;
            while (b < rest.size() && (is_space(rest[b]) || rest[b] == ',')) ++b;
            std::size_t e = b;
            while (e < rest.size() && !is_space(rest[e]) && rest[e] != ',') ++e;
            std::string_view tok = rest.substr(b, e - b);
            if (tok.find('@') != std::string_view::npos) keep(tok);
            rest = rest.substr(e);
        }
    }
    return ids;
}

// --- dates --------------------------------------------------------------------------

std::optional<std::int64_t> parse_date(std::string_view raw) {
    std::string s = strip_comments(raw);
    std::vector<std::string> tokens;
    {
        std::string cur;
        for (char c : s) {
            if (is_space(c) || c == ',') {
                if (!cur.empty()) tokens.push_back(std::move(cur));
                cur.clear();
            } else {
                cur += c;
            }
        }
        if (!cur.empty()) tokens.push_back(std::move(cur));
    }
    static const char* const kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec"};
    int day = -1, month = -1, hour = -1, minute = -1, second = 0;
    long year = -1;
    int year_digits = 0;
    long offset_min = 0;
    bool zone_seen = false;
    auto all_digits = [](std::string_view t) {
        return !t.empty() && std::all_of(t.begin(), t.end(), is_digit);
    };
    for (const std::string& tok : tokens) {
        std::string t = lower(tok);
        if (t.find(':') != std::string::npos && hour < 0 && is_digit(t.front())) {
            // hh:mm[:ss[.fff]]
            int parts[3] = {-1, -1, 0};
            int k = 0;
            std::size_t i = 0;
            bool ok = true;
            while (k < 3 && i < t.size()) {
                std::size_t j = i;
                while (j < t.size() && is_digit(t[j])) ++j;
                if (j == i || j - i > 2) {
                    ok = false;
                    break;
                }
                parts[k++] = std::stoi(t.substr(i, j - i));
                if (j < t.size() && t[j] == ':') {
                    i = j + 1;
                } else {
                    i = j;
                    break;
                }
            }
            if (!ok || k < 2) return std::nullopt;
            hour = parts[0];
            minute = parts[1];
            second = parts[2];
            continue;
        }
        if ((t.front() == '+' || t.front() == '-') && t.size() >= 5) {
            std::string digits;
            for (char c : t.substr(1))
                if (c != ':') digits += c;
            if (digits.size() != 4 || !all_digits(digits)) return std::nullopt;
            int hh = std::stoi(digits.substr(0, 2)), mm = std::stoi(digits.substr(2, 2));
            if (hh > 23 || mm > 59) return std::nullopt;
            offset_min = (t.front() == '+' ? 1 : -1) * (hh * 60 + mm);
            zone_seen = true;
            continue;
        }
        if (all_digits(t)) {
            long v = t.size() > 6 ? -1 : std::stol(t);
            if (v < 0) return std::nullopt;
            if (day < 0 && t.size() <= 2 && v >= 1 && v <= 31) {
                day = static_cast<int>(v);
            } else if (year < 0) {
                year = v;
                year_digits = static_cast<int>(t.size());
            } else if (day < 0 && v >= 1 && v <= 31) {
                day = static_cast<int>(v);
            } else {
                return std::nullopt;
            }
            continue;
        }
        if (is_alpha(t.front())) {
            bool is_month = false;
            if (t.size() >= 3)
                for (int m = 0; m < 12; ++m)
                    if (t.compare(0, 3, kMonths[m]) == 0) {
                        if (month >= 0) return std::nullopt;
                        month = m + 1;
                        is_month = true;
                        break;
                    }
            if (is_month) continue;
            if (zone_seen) continue;
            static const std::pair<const char*, int> kZones[] = {
                {"ut", 0},       {"utc", 0},      {"gmt", 0},      {"z", 0},
                {"est", -5 * 60}, {"edt", -4 * 60}, {"cst", -6 * 60}, {"cdt", -5 * 60},
                {"mst", -7 * 60}, {"mdt", -6 * 60}, {"pst", -8 * 60}, {"pdt", -7 * 60},
                {"bst", 60},     {"cet", 60},     {"cest", 120}};
            for (const auto& [name, off] : kZones)
                if (t == name) {
                    offset_min = off;
                    zone_seen = true;
                }
            // Anything else (day names, military zones, unknown zones) means
            // nothing here; RFC 5322 reads unknown zones as -0000.
            continue;
        }
        // Unknown token: ignored.
    }
    if (day < 0 || month < 0 || year < 0 || hour < 0 || minute < 0) return std::nullopt;
    if (year_digits == 2) year += year < 50 ? 2000 : 1900;
    else if (year_digits == 3) year += 1900;
    if (year < 1900 || year > 9999) return std::nullopt;
    static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    int dim = kDays[month - 1] + (month == 2 && leap ? 1 : 0);
    if (day > dim || hour > 23 || minute > 59 || second > 60) return std::nullopt;
    if (second == 60) second = 59;
    // Days from civil (Howard Hinnant's algorithm).
    long y = year - (month <= 2 ? 1 : 0);
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long days = era * 146097 + doe - 719468;
    std::int64_t secs = static_cast<std::int64_t>(days) * 86400 + hour * 3600 + minute * 60 + second -
                        offset_min * 60;
    return secs * 1000;
}

// --- HTML -----------------------------------------------------------------------

std::string html_to_text(std::string_view html) {
    std::string out;
    out.reserve(html.size());
    auto starts_ci = [&](std::size_t at, std::string_view what) {
        return at + what.size() <= html.size() && iequals(html.substr(at, what.size()), what);
    };
    std::size_t i = 0;
    while (i < html.size()) {
        char c = html[i];
        if (c == '<') {
            if (starts_ci(i, "<!--")) {
                std::size_t end = html.find("-->", i + 4);
                i = end == std::string_view::npos ? html.size() : end + 3;
                continue;
            }
            std::size_t j = i + 1;
            bool closing = j < html.size() && html[j] == '/';
            if (closing) ++j;
            std::size_t name_start = j;
            while (j < html.size() && (is_alpha(html[j]) || is_digit(html[j]))) ++j;
            std::string name = lower(html.substr(name_start, j - name_start));
            if (name.empty() && !(j < html.size() && (html[j] == '!' || html[j] == '?'))) {
                out += '<'; // a lone '<' in text
                ++i;
                continue;
            }
            // The end of the tag, skipping quoted attribute values.
            char quote = 0;
            while (j < html.size()) {
                if (quote) {
                    if (html[j] == quote) quote = 0;
                } else if (html[j] == '"' || html[j] == '\'') {
                    quote = html[j];
                } else if (html[j] == '>') {
                    break;
                }
                ++j;
            }
            i = j < html.size() ? j + 1 : html.size();
            if (!closing && (name == "script" || name == "style" || name == "head" || name == "title")) {
                // Skip to the matching end tag.
                std::string end_tag = "</" + name;
                std::size_t k = i;
                while (k < html.size() && !starts_ci(k, end_tag)) ++k;
                std::size_t gt = html.find('>', k);
                i = gt == std::string_view::npos ? html.size() : gt + 1;
                continue;
            }
            static const char* const kBlock[] = {
                "br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol",
                "blockquote", "hr", "pre", "section", "article", "header", "footer", "dt", "dd"};
            if (std::any_of(std::begin(kBlock), std::end(kBlock),
                            [&](const char* b) { return name == b; }))
                out += '\n';
            else if (name == "td" || name == "th")
                out += ' ';
            continue;
        }
        if (c == '&') {
            // Entities are short: look no further (a text of '&'s stays linear).
            std::size_t semi = html.substr(i, 12).find(';');
            if (semi != std::string_view::npos) {
                semi += i;
                std::string_view ent = html.substr(i + 1, semi - i - 1);
                std::uint32_t cp = 0;
                bool known = true;
                if (!ent.empty() && ent[0] == '#') {
                    bool hex = ent.size() > 1 && (ent[1] == 'x' || ent[1] == 'X');
                    std::string_view digits = ent.substr(hex ? 2 : 1);
                    known = !digits.empty();
                    for (char d : digits) {
                        int v = hex ? hex_value(d) : (is_digit(d) ? d - '0' : -1);
                        if (v < 0 || cp > 0x10FFFF) {
                            known = false;
                            break;
                        }
                        cp = cp * (hex ? 16 : 10) + static_cast<std::uint32_t>(v);
                    }
                } else {
                    static const std::pair<const char*, std::uint32_t> kNamed[] = {
                        {"amp", '&'},      {"lt", '<'},       {"gt", '>'},       {"quot", '"'},
                        {"apos", '\''},    {"nbsp", ' '},     {"pound", 0xA3},   {"euro", 0x20AC},
                        {"copy", 0xA9},    {"reg", 0xAE},     {"ndash", 0x2013}, {"mdash", 0x2014},
                        {"hellip", 0x2026}, {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201C},
                        {"rdquo", 0x201D}, {"bull", 0x2022},  {"middot", 0xB7},  {"deg", 0xB0}};
                    known = false;
                    for (const auto& [n, v] : kNamed)
                        if (ent == n) {
                            cp = v;
                            known = true;
                        }
                }
                if (known) {
                    if (cp == ' ') out += ' ';
                    else append_utf8(out, cp);
                    i = semi + 1;
                    continue;
                }
            }
            out += '&';
            ++i;
            continue;
        }
        out += is_space(c) ? ' ' : c;
        ++i;
    }
    // Tidy: one space at most, no space around line breaks, no blank lines.
    std::string tidy;
    tidy.reserve(out.size());
    int newlines = 0;
    bool space = false;
    for (char c : out) {
        if (c == '\n') {
            ++newlines;
            space = false;
            continue;
        }
        if (c == ' ') {
            space = true;
            continue;
        }
        if (!tidy.empty()) {
            if (newlines) tidy += '\n';
            else if (space) tidy += ' ';
        }
        newlines = 0;
        space = false;
        tidy += c;
    }
    return tidy;
}

// --- file names ---------------------------------------------------------------------

std::string safe_filename(std::string_view name, std::string_view media_type) {
    if (auto slash = name.find_last_of("/\\"); slash != std::string_view::npos)
        name = name.substr(slash + 1);
    std::string out;
    bool run = false;
    for (char c : name) {
        if (is_alpha(c) || is_digit(c) || c == '.' || c == '-' || c == '_') {
            out += c;
            run = false;
        } else if (!run) {
            out += '_';
            run = true;
        }
    }
    // No hidden files, no option-like names, no ".." left over.
    while (!out.empty() && (out.front() == '.' || out.front() == '_' || out.front() == '-'))
        out.erase(0, 1);
    while (!out.empty() && (out.back() == '.' || out.back() == '_')) out.pop_back();
    bool usable = std::any_of(out.begin(), out.end(), [](char c) { return is_alpha(c) || is_digit(c); });
    if (!usable) {
        static const std::pair<const char*, const char*> kExt[] = {
            {"application/pdf", ".pdf"}, {"image/jpeg", ".jpg"}, {"image/png", ".png"},
            {"image/gif", ".gif"}, {"image/heic", ".heic"}, {"image/webp", ".webp"},
            {"image/tiff", ".tif"}, {"text/plain", ".txt"}, {"text/html", ".html"},
            {"text/csv", ".csv"}, {"text/calendar", ".ics"}, {"message/rfc822", ".eml"},
            {"application/msword", ".doc"},
            {"application/vnd.openxmlformats-officedocument.wordprocessingml.document", ".docx"},
            {"application/vnd.ms-excel", ".xls"},
            {"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".xlsx"},
            {"application/zip", ".zip"}, {"audio/mpeg", ".mp3"}, {"audio/wav", ".wav"},
            {"audio/x-wav", ".wav"}, {"video/mp4", ".mp4"}};
        std::string ext = ".bin";
        for (const auto& [type, e] : kExt)
            if (media_type == type) ext = e;
        return "attachment" + ext;
    }
    constexpr std::size_t kMaxName = 100;
    if (out.size() > kMaxName) {
        std::size_t dot = out.rfind('.');
        std::string ext = (dot != std::string::npos && out.size() - dot <= 10) ? out.substr(dot) : "";
        out = out.substr(0, kMaxName - ext.size()) + ext;
    }
    return out;
}

// --- the message ------------------------------------------------------------------

std::string Message::thread_id() const {
    if (!references.empty()) return references.front();
    if (!in_reply_to.empty()) return in_reply_to.front();
    return message_id;
}

namespace {

struct Part {
    std::string number; // IMAP-style part number: "1", "1.2"; "" for a multipart message root
    std::string label;  // prefix for defects: "part 1.2: " or ""
    HeaderParams type;  // Content-Type, value "type/subtype"
    std::string cte;    // Content-Transfer-Encoding, lower case
    HeaderParams disposition;
    std::string_view body;
    std::vector<Part> children;
    bool multipart = false;

    std::string main_type() const { return type.value.substr(0, type.value.find('/')); }
    std::string sub_type() const {
        std::size_t slash = type.value.find('/');
        return slash == std::string::npos ? "" : type.value.substr(slash + 1);
    }
    std::string filename() const {
        auto f = disposition.params.find("filename");
        if (f != disposition.params.end() && !f->second.empty()) return f->second;
        auto n = type.params.find("name");
        return n != type.params.end() ? n->second : "";
    }
    // Text meant to be read as the message, not a file.
    bool body_text() const {
        return !multipart && (type.value == "text/plain" || type.value == "text/html") &&
               disposition.value != "attachment" && filename().empty();
    }
};

const Header* find_header(const std::vector<Header>& headers, std::string_view name,
                          std::size_t* count = nullptr) {
    const Header* first = nullptr;
    std::size_t n = 0;
    for (const auto& h : headers)
        if (iequals(h.name, name)) {
            if (!first) first = &h;
            ++n;
        }
    if (count) *count = n;
    return first;
}

class Parser {
public:
    Parser(const Limits& limits, Message& m) : limits_(limits), m_(m) {}

    // Fills `p` from its headers and body; splits multiparts.
    void entity(Part& p, const std::vector<Header>& headers, std::string_view body,
                std::size_t depth, bool in_digest) {
        if (!m_.refused.empty()) return;
        if (++m_.parts > limits_.max_parts) {
            m_.refused = "more than " + std::to_string(limits_.max_parts) + " MIME parts";
            return;
        }
        p.body = body;
        if (const Header* ct = find_header(headers, "Content-Type")) {
            p.type = parse_header_params(ct->value, m_.defects, p.label);
            std::size_t slash = p.type.value.find('/');
            if (slash == std::string::npos || slash == 0 || slash + 1 == p.type.value.size()) {
                m_.defects.add(p.label + "malformed Content-Type, read as text/plain");
                p.type.value = "text/plain";
            }
        } else {
            p.type.value = in_digest ? "message/rfc822" : "text/plain";
        }
        if (const Header* cte = find_header(headers, "Content-Transfer-Encoding"))
            p.cte = lower(collapse_space(strip_comments(cte->value)));
        if (const Header* cd = find_header(headers, "Content-Disposition"))
            p.disposition = parse_header_params(cd->value, m_.defects, p.label);
        if (p.main_type() != "multipart") return;

        if (depth + 1 > limits_.max_depth) {
            m_.refused = "MIME nesting deeper than " + std::to_string(limits_.max_depth) + " levels";
            return;
        }
        auto b = p.type.params.find("boundary");
        if (b == p.type.params.end() || b->second.empty()) {
            m_.defects.add(p.label + "multipart without a boundary, read as text/plain");
            p.type.value = "text/plain";
            return;
        }
        if (!p.cte.empty() && p.cte != "7bit" && p.cte != "8bit" && p.cte != "binary")
            m_.defects.add(p.label + "multipart with Content-Transfer-Encoding " + charset_label(p.cte) +
                           ", ignored");
        std::vector<std::string_view> pieces;
        bool found = false, closed = false;
        split(body, "--" + b->second, pieces, found, closed);
        if (!found) {
            m_.defects.add(p.label + "multipart boundary not found, read as text/plain");
            p.type.value = "text/plain";
            return;
        }
        if (!closed) m_.defects.add(p.label + "multipart boundary never closed");
        p.multipart = true;
        bool digest = p.sub_type() == "digest";
        for (std::size_t k = 0; k < pieces.size() && m_.refused.empty(); ++k) {
            Part child;
            child.number = (p.number.empty() ? "" : p.number + ".") + std::to_string(k + 1);
            child.label = "part " + child.number + ": ";
            std::size_t body_at = 0;
            auto child_headers = parse_headers(pieces[k], body_at, m_.defects, child.label);
            entity(child, child_headers, pieces[k].substr(body_at), depth + 1, digest);
            p.children.push_back(std::move(child));
        }
    }

    // Text and attachments, from the tree.
    void collect(const Part& p) {
        if (p.multipart) {
            if (p.sub_type() == "alternative") {
                const Part* best = nullptr;
                int best_score = -1;
                for (const auto& c : p.children) {
                    int score = contains(c, "text/plain") ? 2 : contains(c, "text/html") ? 1 : 0;
                    if (score > best_score) {
                        best = &c;
                        best_score = score;
                    }
                }
                // Nothing readable: the last alternative is the sender's favourite.
                if (best_score == 0 && !p.children.empty()) best = &p.children.back();
                if (best) collect(*best);
                return;
            }
            for (const auto& c : p.children) collect(c);
            return;
        }
        std::string part_no = p.number.empty() ? "1" : p.number;
        std::string data = decode(p);
        if (p.body_text()) {
            auto cs = p.type.params.find("charset");
            std::string text = to_utf8(data, cs == p.type.params.end() ? "" : cs->second,
                                       m_.defects, p.label.empty() ? "part 1: " : p.label);
            text = normalise_newlines(text);
            bool html = p.type.value == "text/html";
            if (html) text = html_to_text(text);
            text = std::string(trim(text));
            if (text.empty()) return;
            if (!m_.text.empty()) m_.text += "\n\n";
            m_.text += text;
            if (!html || m_.text_type.empty()) m_.text_type = p.type.value;
            return;
        }
        Attachment a;
        a.filename = p.filename();
        a.media_type = p.type.value;
        a.data = std::move(data);
        a.part = part_no;
        m_.attachments.push_back(std::move(a));
    }

private:
    // Splits a multipart body at its delimiter lines.
    static void split(std::string_view body, const std::string& delim,
                      std::vector<std::string_view>& pieces, bool& found, bool& closed) {
        std::optional<std::size_t> start;
        std::size_t pos = 0;
        while (pos < body.size()) {
            Line l = line_at(body, pos);
            std::string_view line = body.substr(l.start, l.end - l.start);
            if (line.size() >= delim.size() && line.compare(0, delim.size(), delim) == 0) {
                std::string_view rest = line.substr(delim.size());
                bool close = rest.substr(0, 2) == "--";
                if (close || std::all_of(rest.begin(), rest.end(), is_wsp)) {
                    if (start) {
                        // The line break before a delimiter belongs to it.
                        std::size_t end = l.start;
                        if (end > *start && body[end - 1] == '\n') --end;
                        if (end > *start && body[end - 1] == '\r') --end;
                        pieces.push_back(body.substr(*start, end - *start));
                    }
                    found = true;
                    if (close) {
                        closed = true;
                        return;
                    }
                    start = l.next;
                }
            }
            pos = l.next;
        }
        if (start) pieces.push_back(body.substr(std::min(*start, body.size())));
    }

    static bool contains(const Part& p, std::string_view type) {
        if (!p.multipart) return p.body_text() && p.type.value == type;
        return std::any_of(p.children.begin(), p.children.end(),
                           [&](const Part& c) { return contains(c, type); });
    }

    std::string decode(const Part& p) {
        const std::string& cte = p.cte;
        bool clean = true;
        std::string out;
        if (cte == "base64") {
            out = decode_base64(p.body, &clean);
            if (!clean) m_.defects.add(p.label + "malformed base64");
        } else if (cte == "quoted-printable") {
            out = decode_quoted_printable(p.body, &clean);
            if (!clean) m_.defects.add(p.label + "malformed quoted-printable");
        } else {
            if (!cte.empty() && cte != "7bit" && cte != "8bit" && cte != "binary")
                m_.defects.add((p.label.empty() ? std::string("part 1: ") : p.label) +
                               "unknown Content-Transfer-Encoding " + charset_label(cte) +
                               ", read as is");
            out = std::string(p.body);
        }
        return out;
    }

    static std::string normalise_newlines(std::string_view s) {
        std::string out;
        out.reserve(s.size());
        for (std::size_t i = 0; i < s.size(); ++i) {
            if (s[i] == '\r') {
                out += '\n';
                if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
            } else {
                out += s[i];
            }
        }
        return out;
    }

    const Limits& limits_;
    Message& m_;
};

} // namespace

Message parse_message(std::string_view raw, const Limits& limits) {
    Message m;
    // Line ends: CRLF is the standard; a bare LF is tolerated and noted.
    for (std::size_t nl = raw.find('\n'); nl != std::string_view::npos; nl = raw.find('\n', nl + 1))
        if (nl == 0 || raw[nl - 1] != '\r') {
            m.defects.add("bare LF line endings");
            break;
        }
    std::size_t body_at = 0;
    auto headers = parse_headers(raw, body_at, m.defects);

    auto single = [&](const char* name) -> const Header* {
        std::size_t n = 0;
        const Header* h = find_header(headers, name, &n);
        if (n > 1) m.defects.add(std::string("several ") + name + " headers; the first is used");
        return h;
    };
    if (const Header* from = single("From")) {
        m.from = parse_mailbox(from->value, m.defects);
        if (!m.from || m.from->address.empty()) m.defects.add("From header without an address");
        else if (m.from->address.find('@') == std::string::npos)
            m.defects.add("From address without a domain");
    } else {
        m.defects.add("no From header");
    }
    if (const Header* subject = single("Subject"))
        m.subject = collapse_space(decode_header_text(subject->value, m.defects, "Subject"));
    if (const Header* date = single("Date")) {
        m.date = parse_date(date->value);
        if (!m.date) m.defects.add("unreadable Date header");
    } else {
        m.defects.add("no Date header");
    }
    if (const Header* id = single("Message-ID")) {
        auto ids = parse_msg_ids(id->value);
        if (ids.empty()) {
            m.defects.add("malformed Message-ID header");
        } else {
            m.message_id = ids.front();
            if (id->value.find('<') == std::string::npos)
                m.defects.add("Message-ID without angle brackets");
        }
    } else {
        m.defects.add("no Message-ID header");
    }
    if (const Header* irt = single("In-Reply-To")) m.in_reply_to = parse_msg_ids(irt->value);
    if (const Header* refs = single("References")) m.references = parse_msg_ids(refs->value);

    Parser parser(limits, m);
    Part root;
    // A single-part message's body is part 1 (IMAP numbering).
    bool root_multipart = false;
    if (const Header* ct = find_header(headers, "Content-Type")) {
        Defects scratch;
        root_multipart = parse_header_params(ct->value, scratch).value.rfind("multipart/", 0) == 0;
    }
    root.label = root_multipart ? "" : "part 1: ";
    parser.entity(root, headers, raw.substr(std::min(body_at, raw.size())), 0, false);
    if (!m.refused.empty()) return m;
    parser.collect(root);
    return m;
}

} // namespace sbmail
