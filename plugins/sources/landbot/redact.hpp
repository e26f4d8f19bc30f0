// landbot: redaction of card data and National Insurance numbers in chat
// text, applied before anything the plugin holds reaches durable storage
// (its conversation state, the quarantine, the emitted record).
//
// Why here and not in the core: the core strips card numbers from records at
// ingest and from quarantined bytes, but not from a plugin's durable state,
// and it redacts NINOs only in profiles. An open conversation sits in state
// for up to quiet_period (plus max_duration), so it is "at rest" too. The
// core's pii library is private, so this is a small scanner of the same
// shape: hand-written, no regex, ASCII-only replacements (UTF-8 stays valid).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace landbot {

struct RedactCounts {
    std::uint64_t cards = 0;
    std::uint64_t cvv = 0;
    std::uint64_t expiry = 0;
    std::uint64_t nino = 0;
};

namespace detail {

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
inline bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
inline bool is_alnum(char c) { return is_digit(c) || is_alpha(c); }
inline char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
inline char upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

// A match must not start or end inside an ASCII word or number.
inline bool boundary_before(std::string_view s, std::size_t i) { return i == 0 || !is_alnum(s[i - 1]); }
inline bool boundary_after(std::string_view s, std::size_t e) { return e >= s.size() || !is_alnum(s[e]); }

inline bool luhn_valid(std::string_view digits) {
    if (digits.empty()) return false;
    int sum = 0;
    bool twice = false;
    for (std::size_t k = digits.size(); k-- > 0;) {
        int d = digits[k] - '0';
        if (d < 0 || d > 9) return false;
        if (twice) {
            d *= 2;
            if (d > 9) d -= 9;
        }
        sum += d;
        twice = !twice;
    }
    return sum % 10 == 0;
}

// The groupings people and card issuers write: contiguous, 4-4-4-4[-3],
// 4-4-4-1..4 (13-16 digit Visa written in fours), 4-6-5 (Amex), 4-6-4 (Diners).
inline bool card_grouping(const std::vector<int>& g) {
    if (g.size() == 1) return true;
    if (g.size() == 3) return g[0] == 4 && g[1] == 6 && (g[2] == 5 || g[2] == 4);
    if (g.size() == 4) return g[0] == 4 && g[1] == 4 && g[2] == 4 && g[3] >= 1 && g[3] <= 4;
    if (g.size() == 5) return g[0] == 4 && g[1] == 4 && g[2] == 4 && g[3] == 4 && g[4] == 3;
    return false;
}

// A card number starting at i: 13-19 digits, Luhn-valid, first digit 2-6 or
// 8 (payment cards; this keeps long numeric ids and millisecond timestamps,
// which start with 1, out). Returns its end, or npos.
inline std::size_t card_at(std::string_view s, std::size_t i) {
    if (!is_digit(s[i]) || !boundary_before(s, i)) return std::string_view::npos;
    // Groups of digits separated by one space or one dash (one kind only).
    std::vector<int> groups;
    std::vector<std::size_t> ends;
    std::string digits;
    char sep = 0;
    std::size_t p = i;
    for (;;) {
        std::size_t start = p;
        while (p < s.size() && is_digit(s[p]) && digits.size() < 20) digits.push_back(s[p++]);
        groups.push_back(static_cast<int>(p - start));
        ends.push_back(p);
        if (digits.size() >= 20 || groups.size() > 5) break;
        if (p + 1 < s.size() && (s[p] == ' ' || s[p] == '-') && is_digit(s[p + 1]) &&
            (sep == 0 || sep == s[p])) {
            sep = s[p];
            ++p;
            continue;
        }
        break;
    }
    // The longest prefix of whole groups that is a card number ("4111 1111
    // 1111 1111 123": the CVV written after it is not part of it).
    for (std::size_t n = groups.size(); n > 0; --n) {
        std::vector<int> g(groups.begin(), groups.begin() + static_cast<std::ptrdiff_t>(n));
        std::size_t count = 0;
        for (int x : g) count += static_cast<std::size_t>(x);
        std::size_t end = ends[n - 1];
        // A contiguous run longer than 19 digits is a number, not a card.
        if (n == groups.size() && p < s.size() && is_digit(s[p])) continue;
        if (count < 13 || count > 19 || !card_grouping(g)) continue;
        if (!boundary_after(s, end)) continue;
        std::string_view d(digits.data(), count);
        char first = d[0];
        if (!(first >= '2' && first <= '6') && first != '8') continue;
        if (!luhn_valid(d)) continue;
        return end;
    }
    return std::string_view::npos;
}

// MM/YY, MM/YYYY, MM-YY, M/YY at i (word-bounded); its end or npos.
inline std::size_t expiry_at(std::string_view s, std::size_t i) {
    if (i >= s.size() || !is_digit(s[i]) || !boundary_before(s, i)) return std::string_view::npos;
    std::size_t p = i;
    int month = 0, md = 0;
    while (p < s.size() && is_digit(s[p]) && md < 3) month = month * 10 + (s[p++] - '0'), ++md;
    if (md < 1 || md > 2 || month < 1 || month > 12) return std::string_view::npos;
    if (p >= s.size() || (s[p] != '/' && s[p] != '-')) return std::string_view::npos;
    ++p;
    int yd = 0;
    while (p < s.size() && is_digit(s[p]) && yd < 5) ++p, ++yd;
    if (yd != 2 && yd != 4) return std::string_view::npos;
    if (!boundary_after(s, p)) return std::string_view::npos;
    return p;
}

// A 3-4 digit security code at i (word-bounded); its end or npos.
inline std::size_t cvv_at(std::string_view s, std::size_t i) {
    if (i >= s.size() || !is_digit(s[i]) || !boundary_before(s, i)) return std::string_view::npos;
    std::size_t p = i;
    while (p < s.size() && is_digit(s[p])) ++p;
    if (p - i < 3 || p - i > 4 || !boundary_after(s, p)) return std::string_view::npos;
    return p;
}

// Case-insensitive word at i; its end or npos.
inline std::size_t word_at(std::string_view s, std::size_t i, std::string_view w) {
    if (i + w.size() > s.size() || !boundary_before(s, i)) return std::string_view::npos;
    for (std::size_t k = 0; k < w.size(); ++k)
        if (lower(s[i + k]) != w[k]) return std::string_view::npos;
    if (!boundary_after(s, i + w.size())) return std::string_view::npos;
    return i + w.size();
}

// Separators between a keyword and its value: spaces and ":=#.(" and the
// filler words "is", "date", "no", "number", "code".
inline std::size_t skip_filler(std::string_view s, std::size_t p) {
    for (int rounds = 0; rounds < 6; ++rounds) {
        std::size_t q = p;
        while (q < s.size() && (s[q] == ' ' || s[q] == ':' || s[q] == '=' || s[q] == '#' ||
                                s[q] == '.' || s[q] == '(' || s[q] == ',' || s[q] == '\t'))
            ++q;
        bool moved = q != p;
        p = q;
        for (std::string_view w : {"is", "date", "no", "number", "code", "of"}) {
            std::size_t e = word_at(s, p, w);
            if (e != std::string_view::npos) {
                p = e;
                moved = true;
                break;
            }
        }
        if (!moved) break;
    }
    return p;
}

enum class Keyword { None, Cvv, Expiry };

// A CVV or expiry keyword at i: its kind and end.
inline Keyword keyword_at(std::string_view s, std::size_t i, std::size_t& end) {
    static constexpr std::string_view cvv[] = {"cvv2", "cvc2", "cvv", "cvc", "cv2", "csc",
                                               "security"};
    static constexpr std::string_view exp[] = {"expiry", "expires", "expiration", "exp",
                                               "valid"};
    for (std::string_view w : cvv) {
        std::size_t e = word_at(s, i, w);
        if (e != std::string_view::npos) {
            if (w == "security") { // only "security code"
                std::size_t q = e;
                while (q < s.size() && s[q] == ' ') ++q;
                std::size_t c = word_at(s, q, "code");
                if (c == std::string_view::npos) continue;
                e = c;
            }
            end = e;
            return Keyword::Cvv;
        }
    }
    for (std::string_view w : exp) {
        std::size_t e = word_at(s, i, w);
        if (e != std::string_view::npos) {
            if (w == "valid") { // "valid to/until/thru"
                std::size_t q = e;
                while (q < s.size() && s[q] == ' ') ++q;
                std::size_t t = std::string_view::npos;
                for (std::string_view x : {"to", "until", "thru", "till"})
                    if ((t = word_at(s, q, x)) != std::string_view::npos) break;
                if (t == std::string_view::npos) continue;
                e = t;
            }
            end = e;
            return Keyword::Expiry;
        }
    }
    return Keyword::None;
}

// National Insurance number at i: two letters, then 2+2+2 digits, then A-D,
// with optional single spaces between the parts ("QQ 12 34 56 C",
// "QQ123456C", "qq 123456 c"). Prefix letters are not checked (test data uses
// the never-issued QQ, and over-redaction is the safe side).
inline std::size_t nino_at(std::string_view s, std::size_t i) {
    if (i + 9 > s.size() || !boundary_before(s, i)) return std::string_view::npos;
    std::size_t p = i;
    if (!is_alpha(s[p]) || !is_alpha(s[p + 1])) return std::string_view::npos;
    p += 2;
    for (int pair = 0; pair < 3; ++pair) {
        if (p < s.size() && s[p] == ' ') ++p;
        if (p + 2 > s.size() || !is_digit(s[p]) || !is_digit(s[p + 1])) return std::string_view::npos;
        p += 2;
    }
    if (p < s.size() && s[p] == ' ') ++p;
    if (p >= s.size()) return std::string_view::npos;
    char l = lower(s[p]);
    if (l < 'a' || l > 'd') return std::string_view::npos;
    ++p;
    if (!boundary_after(s, p)) return std::string_view::npos;
    return p;
}

} // namespace detail

struct RedactOptions {
    bool cards = true; // card numbers, and CVV / expiry phrases
    bool nino = true;
};

// Replaces card numbers with [CARD], security codes with [CVV], expiry dates
// with [EXPIRY] (after a keyword, or straight after a card number) and NINOs
// with [NINO]. Keywords are kept ("cvv [CVV]"). `ninos` (optional) receives
// each NINO found, normalised (upper case, no spaces). Text without any of
// them comes back unchanged.
inline std::string redact(std::string_view s, RedactCounts* counts = nullptr,
                          std::vector<std::string>* ninos = nullptr, RedactOptions opt = {}) {
    using namespace detail;
    constexpr std::size_t npos = std::string_view::npos;
    RedactCounts local;
    RedactCounts& c = counts ? *counts : local;
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    // After a card number, the next one or two values (expiry, code) are card
    // data even without a keyword: "4111 1111 1111 1111 09/29 123".
    int tail = 0;
    while (i < s.size()) {
        char ch = s[i];
        if (opt.cards && is_digit(ch)) {
            std::size_t e = card_at(s, i);
            if (e != npos) {
                out += "[CARD]";
                ++c.cards;
                i = e;
                tail = 2;
                continue;
            }
            if (tail > 0) {
                if ((e = expiry_at(s, i)) != npos) {
                    out += "[EXPIRY]";
                    ++c.expiry;
                    i = e;
                    --tail;
                    continue;
                }
                if ((e = cvv_at(s, i)) != npos) {
                    out += "[CVV]";
                    ++c.cvv;
                    i = e;
                    --tail;
                    continue;
                }
            }
        }
        if (is_alpha(ch) && boundary_before(s, i)) {
            if (opt.nino) {
                std::size_t e = nino_at(s, i);
                if (e != npos) {
                    if (ninos) {
                        std::string n;
                        for (std::size_t k = i; k < e; ++k)
                            if (s[k] != ' ') n.push_back(upper(s[k]));
                        ninos->push_back(n);
                    }
                    out += "[NINO]";
                    ++c.nino;
                    i = e;
                    continue;
                }
            }
            if (opt.cards) {
                std::size_t kend = 0;
                Keyword k = keyword_at(s, i, kend);
                if (k != Keyword::None) {
                    std::size_t v = skip_filler(s, kend);
                    std::size_t e = k == Keyword::Cvv ? cvv_at(s, v) : expiry_at(s, v);
                    if (e != npos) {
                        out.append(s.substr(i, v - i));
                        out += k == Keyword::Cvv ? "[CVV]" : "[EXPIRY]";
                        ++(k == Keyword::Cvv ? c.cvv : c.expiry);
                        i = e;
                        continue;
                    }
                }
            }
            // Copy the whole word: no match may start inside it.
            std::size_t e = i;
            while (e < s.size() && is_alnum(s[e])) ++e;
            // Only a keyword ("exp", "cvv") keeps the card tail alive: the
            // unmarked expiry and code must follow the number directly.
            if (tail > 0) {
                std::size_t unused = 0;
                if (keyword_at(s, i, unused) == Keyword::None) tail = 0;
            }
            out.append(s.substr(i, e - i));
            i = e;
            continue;
        }
        if (is_digit(ch)) {
            // A number that is none of the above: copy it whole.
            std::size_t e = i;
            while (e < s.size() && is_alnum(s[e])) ++e;
            out.append(s.substr(i, e - i));
            i = e;
            tail = 0;
            continue;
        }
        out.push_back(ch);
        ++i;
    }
    return out;
}

// A bounded prefix of raw input for the quarantine: at most `limit` bytes,
// with any digit run cut at the end dropped (it could be the first part of a
// card number whose rest fell beyond the cut), then redacted.
inline std::string redacted_prefix(std::string_view raw, std::size_t limit,
                                   RedactCounts* counts = nullptr) {
    std::string_view head = raw.substr(0, limit);
    if (head.size() < raw.size()) {
        std::size_t e = head.size();
        while (e > 0 && (detail::is_digit(head[e - 1]) || head[e - 1] == ' ' || head[e - 1] == '-'))
            --e;
        head = head.substr(0, e);
    }
    return redact(head, counts);
}

} // namespace landbot
