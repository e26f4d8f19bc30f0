// Personal data scanners and profile transforms.
//
// Every kind of PII but e-mail contains a digit, so redact() does not read
// text word by word: it jumps from one run of digits to the next, eight
// bytes at a time, and looks only around each run (Scanner::run). Text with
// no digits (and no '@') is settled before that by a digit count. E-mail
// addresses are found by memchr('@'). Matches start and end on ASCII bytes
// (e-mails on code point boundaries), so a replacement never splits a UTF-8
// sequence. Nothing is allocated until something is found.

#include "pipeline/pii.hpp"

#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

namespace switchboard::pii {
namespace {

constexpr std::size_t kNone = 0; // "no match": a match never ends at offset 0

constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }
constexpr char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }
constexpr bool is_alpha(char c) { return lower(c) >= 'a' && lower(c) <= 'z'; }
constexpr bool is_ascii(char c) { return static_cast<unsigned char>(c) < 0x80; }
constexpr int digit(char c) { return c - '0'; }

// ASCII letters and digits: the word characters of the scanners.
constexpr std::array<bool, 256> make_alnum() {
    std::array<bool, 256> t{};
    for (int c = 0; c < 0x80; ++c) {
        const char ch = static_cast<char>(c);
        t[static_cast<std::size_t>(c)] = is_digit(ch) || is_alpha(ch);
    }
    return t;
}
constexpr std::array<bool, 256> kAlnum = make_alnum();

// First letters of the keyword phrases (cvv, code, digits, numbers,
// security, sort, s/c, exp, valid, good, account, a/c), either case.
constexpr std::array<bool, 256> make_keyword_initials() {
    std::array<bool, 256> t{};
    for (const char c : std::string_view("acdegnsv")) {
        t[static_cast<unsigned char>(c)] = true;
        t[static_cast<unsigned char>(c - 32)] = true;
    }
    return t;
}
constexpr std::array<bool, 256> kKeywordInitial = make_keyword_initials();

inline bool is_alnum(char c) { return kAlnum[static_cast<unsigned char>(c)]; }

// UTF-8 ------------------------------------------------------------------------

struct CodePoint {
    char32_t cp;
    std::size_t len; // bytes; an invalid byte decodes as itself, length 1
    bool valid;
};

constexpr bool is_cont(unsigned char b) { return (b & 0xC0) == 0x80; }

// Decodes the code point starting at s[i] (s[i] >= 0x80), rejecting overlong
// forms and surrogates so that a stray Latin-1 byte is one invalid "character".
CodePoint decode(std::string_view s, std::size_t i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    auto at = [&](std::size_t k) -> unsigned char {
        return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0;
    };
    if (b0 >= 0xC2 && b0 <= 0xDF && is_cont(at(1)))
        return {static_cast<char32_t>(((b0 & 0x1F) << 6) | (at(1) & 0x3F)), 2, true};
    if (b0 >= 0xE0 && b0 <= 0xEF && is_cont(at(1)) && is_cont(at(2))) {
        if ((b0 == 0xE0 && at(1) < 0xA0) || (b0 == 0xED && at(1) > 0x9F))
            return {b0, 1, false};
        return {static_cast<char32_t>(((b0 & 0x0F) << 12) | ((at(1) & 0x3F) << 6) | (at(2) & 0x3F)),
                3, true};
    }
    if (b0 >= 0xF0 && b0 <= 0xF4 && is_cont(at(1)) && is_cont(at(2)) && is_cont(at(3))) {
        if ((b0 == 0xF0 && at(1) < 0x90) || (b0 == 0xF4 && at(1) > 0x8F))
            return {b0, 1, false};
        return {static_cast<char32_t>(((b0 & 0x07) << 18) | ((at(1) & 0x3F) << 12) |
                                      ((at(2) & 0x3F) << 6) | (at(3) & 0x3F)),
                4, true};
    }
    return {b0, 1, false};
}

// Whether a non-ASCII code point is part of a word. Letters of any script are
// (so "Łukasz07700900312" is one token and stays); punctuation, symbols,
// spaces and emoji are not (so a number in “curly quotes” or next to 🗑 is
// found). Scripts written without spaces between words (CJK, kana, Thai) are
// treated as separators too: in "电话07700900312" the number is its own word.
bool is_word_cp(char32_t c) {
    if (c < 0x80) return c < 0x7F && is_alnum(static_cast<char>(c));
    if (c <= 0xBF) return false;                                // C1 controls, NBSP, £ « » ·
    if (c == 0xD7 || c == 0xF7) return false;                   // × ÷
    if (c >= 0x0E00 && c <= 0x0E7F) return false;              // Thai
    if (c >= 0x2000 && c <= 0x2BFF) return false;              // punctuation, currency, symbols
    if (c >= 0x2E00 && c <= 0x2E7F) return false;              // supplemental punctuation
    if (c >= 0x2E80 && c <= 0x9FFF) return false;              // CJK, kana, CJK punctuation
    if (c >= 0xF900 && c <= 0xFAFF) return false;              // CJK compatibility ideographs
    if (c >= 0xFE00 && c <= 0xFE6F) return false;              // variation selectors, CJK forms
    if (c >= 0xFF00 && c <= 0xFFEF) {                          // full/half width forms
        return (c >= 0xFF10 && c <= 0xFF19) || (c >= 0xFF21 && c <= 0xFF3A) ||
               (c >= 0xFF41 && c <= 0xFF5A);
    }
    if (c >= 0xFFF0 && c <= 0xFFFF) return false;              // specials, U+FFFD
    if (c >= 0x1F000 && c <= 0x1FAFF) return false;            // emoji, pictographs
    if (c >= 0x20000 && c <= 0x3FFFF) return false;            // CJK extensions
    if (c >= 0xE0000) return false;                            // tags, private use
    return true;
}

// Whether the code point at byte offset i is a word character.
bool word_at(std::string_view s, std::size_t i) {
    if (i >= s.size()) return false;
    if (is_ascii(s[i])) return is_alnum(s[i]);
    const CodePoint cp = decode(s, i);
    return cp.valid && is_word_cp(cp.cp);
}

// The code point ending just before offset i (i > 0); an invalid byte is
// returned as itself, length 1.
CodePoint decode_before(std::string_view s, std::size_t i) {
    std::size_t lead = i - 1;
    while (lead > 0 && i - lead < 4 && is_cont(static_cast<unsigned char>(s[lead]))) --lead;
    const CodePoint cp = decode(s, lead);
    if (cp.valid && lead + cp.len == i) return cp;
    return {static_cast<unsigned char>(s[i - 1]), 1, false};
}

// Whether the code point just before offset i is a word character.
bool word_before(std::string_view s, std::size_t i) {
    if (i == 0) return false;
    if (is_ascii(s[i - 1])) return is_alnum(s[i - 1]);
    const CodePoint cp = decode_before(s, i);
    return cp.valid && is_word_cp(cp.cp);
}

// SWAR: eight bytes in a word, each test leaving the high bit of each byte
// that passes.
constexpr std::uint64_t kLow = 0x0101010101010101ULL, kHigh = 0x8080808080808080ULL;

// Eight bytes at p, the first in the low byte whatever the machine's byte
// order.
std::uint64_t load8(const char* p) {
    std::uint64_t x;
    std::memcpy(&x, p, 8);
    if constexpr (std::endian::native == std::endian::big) x = __builtin_bswap64(x);
    return x;
}

// The eight bytes of `text` from `i` as load8() gives them; where fewer
// are left, the missing ones zero (no letter, no digit). Such a tail is the
// text's last eight bytes, shifted, or for a text shorter than eight read
// byte by byte (a memcpy of a variable length is a call, and its bytes then
// stall the word's load).
std::uint64_t load_at(std::string_view text, std::size_t i) {
    if (i + 8 <= text.size()) return load8(text.data() + i);
    const std::size_t left = text.size() - i;
    if (text.size() >= 8) return load8(text.data() + text.size() - 8) >> (8 * (8 - left));
    std::uint64_t x = 0;
    for (std::size_t k = 0; k < left; ++k) x |= std::uint64_t{static_cast<unsigned char>(text[i + k])} << (8 * k);
    return x;
}

// The bytes of x that are ASCII digits.
std::uint64_t digit_mask(std::uint64_t x) {
    const std::uint64_t y = x & ~kHigh; // 7-bit values: the adds below cannot carry
    // >= '0', and not >= ':', and ASCII.
    return (y + (0x80 - '0') * kLow) & ~(y + (0x80 - ':') * kLow) & ~x & kHigh;
}
std::uint64_t digit_mask(const char* p) { return digit_mask(load8(p)); }

// The bytes of x that are ASCII letters, either case ('A'-'Z' | 0x20 is
// 'a'-'z', and nothing else lands there).
std::uint64_t letter_mask(std::uint64_t x) {
    const std::uint64_t y = (x | 0x20 * kLow) & ~kHigh;
    return (y + (0x80 - 'a') * kLow) & ~(y + (0x80 - '{') * kLow) & ~x & kHigh;
}

// Postcodes ----------------------------------------------------------------------

// A9, A99, AA9, AA99, A9A, AA9A with the letters each position allows
// (and GIR, the Girobank code).
bool valid_outward(std::string_view o) {
    auto up = [](char c) { return static_cast<char>(lower(c) - 32); };
    auto in = [&](char c, const char* set) { return is_alpha(c) && std::strchr(set, up(c)); };
    const std::size_t len = o.size();
    if (len == 3 && up(o[0]) == 'G' && up(o[1]) == 'I' && up(o[2]) == 'R') return true;
    if (len < 2 || len > 4 || !is_alpha(o[0]) || std::strchr("QVX", up(o[0]))) return false;
    if (is_digit(o[1])) { // A9, A99, A9A
        if (len == 2) return true;
        if (len == 3) return is_digit(o[2]) || in(o[2], "ABCDEFGHJKPSTUW");
        return false;
    }
    if (!is_alpha(o[1]) || std::strchr("IJZ", up(o[1])) || len < 3 || !is_digit(o[2])) return false;
    if (len == 3) return true; // AA9
    return is_digit(o[3]) || in(o[3], "ABEHMNPRVWXY"); // AA99, AA9A
}

bool valid_inward(std::string_view in) {
    auto letter_ok = [](char c) { return is_alpha(c) && !std::strchr("CIKMOV", lower(c) - 32); };
    return in.size() == 3 && is_digit(in[0]) && letter_ok(in[1]) && letter_ok(in[2]);
}

// Output -----------------------------------------------------------------------

// Builds the redacted copy lazily: nothing is allocated until the first finding.
class Sink {
public:
    Sink(std::string_view text, std::vector<Finding>* found) : text_(text), found_(found) {}

    void add(Kind kind, std::size_t begin, std::size_t end) {
        if (!any_) {
            out_.reserve(text_.size() + 16);
            any_ = true;
        }
        out_.append(text_.substr(copied_, begin - copied_));
        out_.append(placeholder(kind));
        copied_ = end;
        if (found_) found_->push_back({kind, begin, end});
    }

    bool any() const { return any_; }

    std::string finish() {
        out_.append(text_.substr(copied_));
        return std::move(out_);
    }

private:
    std::string_view text_;
    std::vector<Finding>* found_;
    std::string out_;
    std::size_t copied_ = 0;
    bool any_ = false;
};

// Keyword phrases --------------------------------------------------------------

constexpr std::array<std::string_view, 15> kCvvWords = {
    "cvv2", "cvc2", "cvv", "cvc", "cv2", "csc", "security code", "security number",
    "security no", "sec code", "digits on the back", "digits on back", "numbers on the back",
    "number on the back", "code on the back"};
constexpr std::array<std::string_view, 13> kCvvFiller = {
    "is", "are", "was", "no", "number", "num", "code", "the", "on", "back", "of", "its", "it's"};
// Not "end date": claims and tenancies have those, in the same MM/YYYY form.
constexpr std::array<std::string_view, 17> kExpiryWords = {
    "expiration date", "expiry date", "exp date", "exp. date", "expiration", "expiry",
    "expires", "expiring", "expire", "exp", "valid until", "valid till", "valid to",
    "valid thru", "valid through", "good thru", "good through"};
constexpr std::array<std::string_view, 7> kExpiryFiller = {"is", "was", "date", "on", "end", "of", "the"};
constexpr std::array<std::string_view, 4> kSortWords = {"sort code", "sortcode", "sort-code", "s/c"};
constexpr std::array<std::string_view, 4> kAccountWords = {"account", "acct", "acc", "a/c"};
constexpr std::array<std::string_view, 7> kNumberFiller = {"is", "was", "no", "number", "num", "nr", "of"};

// Every word (run of letters and digits) of the phrases above, which is all
// that may stand between a keyword's start and its value. Checked below.
constexpr std::array<std::string_view, 47> kKeywordVocabulary = {
    "a", "c", "s", "is", "no", "nr", "of", "on", "it", "to", "are", "cvv", "cvc", "cv2", "csc", "num",
    "the", "its", "was", "sec", "exp", "acc", "end", "cvv2", "cvc2", "code", "back", "date",
    "sort", "acct", "thru", "till", "good", "valid", "until", "number", "digits", "expiry",
    "expire", "numbers", "expires", "through", "account", "security", "expiring", "sortcode",
    "expiration"};

// A word of up to 10 lowercase letters and digits as a number, base 37, so
// that looking one up is a binary search over integers.
constexpr std::uint64_t pack_word(std::string_view w) {
    std::uint64_t code = 0;
    for (const char c : w)
        code = code * 37 + static_cast<std::uint64_t>(is_digit(c) ? c - '0' + 1 : c - 'a' + 11);
    return code;
}

constexpr std::array<std::uint64_t, kKeywordVocabulary.size()> kVocabularyCodes = [] {
    std::array<std::uint64_t, kKeywordVocabulary.size()> codes{};
    for (std::size_t k = 0; k < codes.size(); ++k) codes[k] = pack_word(kKeywordVocabulary[k]);
    std::sort(codes.begin(), codes.end());
    return codes;
}();

constexpr bool in_vocabulary(std::string_view word) {
    return word.size() <= 10 &&
           std::binary_search(kVocabularyCodes.begin(), kVocabularyCodes.end(), pack_word(word));
}

template <std::size_t N>
constexpr bool vocabulary_covers(const std::array<std::string_view, N>& phrases) {
    for (const std::string_view ph : phrases) {
        std::size_t b = 0;
        for (std::size_t k = 0; k <= ph.size(); ++k) {
            if (k < ph.size() && (is_digit(ph[k]) || (ph[k] >= 'a' && ph[k] <= 'z'))) continue;
            if (k > b && !in_vocabulary(ph.substr(b, k - b))) return false;
            b = k + 1;
        }
    }
    return true;
}
static_assert(vocabulary_covers(kCvvWords) && vocabulary_covers(kCvvFiller) &&
              vocabulary_covers(kExpiryWords) && vocabulary_covers(kExpiryFiller) &&
              vocabulary_covers(kSortWords) && vocabulary_covers(kAccountWords) &&
              vocabulary_covers(kNumberFiller));

// Scanner ----------------------------------------------------------------------

enum class Mode { All, Cards };

struct Span {
    std::size_t begin;
    std::size_t end;
};

// Runs of digits separated by exactly one ' ' or '-': "4111 1111 1111 1111",
// "0151-496-0732". Scanners try prefixes of the chain, longest first, so a
// trailing number ("... 0732 2 times") does not hide a match.
struct Groups {
    static constexpr int kMax = 8;
    int count = 0;
    std::array<std::size_t, kMax> len; // digits in each group; only [0, count) is set
    std::array<std::size_t, kMax> end; // offset just after each group
};

class Scanner {
public:
    Scanner(std::string_view s, Mode mode, Sink& sink) : s_(s), n_(s.size()), mode_(mode), sink_(sink) {}

    // Every kind but e-mail contains a digit, so the scan jumps from one run
    // of digits to the next (eight bytes at a time) and looks only around
    // each: the word it ends (NINO, postcode), a '+' or '(' before it
    // (phone), the keyword phrase before it (CVV, expiry, bank details), or
    // the number it starts. Findings come out in order and never overlap:
    // nothing before `pos`, the end of the last one, is looked at again.
    void run() {
        if (mode_ == Mode::All) find_emails();
        std::size_t next_email = 0;
        email_begin_ = emails_.empty() ? kNever : emails_[0].begin;
        std::size_t pos = 0;
        std::size_t i = 0;
        for (;;) {
            const std::size_t d = next_digit(i);
            // E-mail addresses that begin before this digit go first.
            while (email_begin_ <= d && next_email < emails_.size()) {
                const Span e = emails_[next_email++];
                email_begin_ = next_email < emails_.size() ? emails_[next_email].begin : kNever;
                if (e.begin >= pos) {
                    sink_.add(Kind::Email, e.begin, e.end);
                    pos = e.end;
                }
            }
            if (d >= n_) break;
            const std::size_t run_end = d + digits_from(d);
            if (d < pos || (d > 0 && is_digit(s_[d - 1]))) { // inside an address or a run
                i = std::max(pos, run_end);
                continue;
            }
            const std::size_t end = at_run(d, pos);
            if (end != kNone) {
                pos = end;
                i = end;
            } else {
                i = run_end;
            }
        }
    }

private:
    std::string_view s_;
    std::size_t n_;
    Mode mode_;
    Sink& sink_;
    std::vector<Span> emails_;
    static constexpr std::size_t kNever = static_cast<std::size_t>(-1);
    std::size_t email_begin_ = kNever; // where the next e-mail address starts

    char at(std::size_t i) const { return i < n_ ? s_[i] : '\0'; }

    // Whether s_[t, q) is a word of the keyword vocabulary, in any case.
    bool vocabulary_word(std::size_t t, std::size_t q) const {
        if (q - t > 10) return false;
        std::uint64_t code = 0;
        for (std::size_t k = t; k < q; ++k) {
            const char c = s_[k];
            code = code * 37 + static_cast<std::uint64_t>(is_digit(c) ? c - '0' + 1 : (c | 0x20) - 'a' + 11);
        }
        return std::binary_search(kVocabularyCodes.begin(), kVocabularyCodes.end(), code);
    }

    // The offset of the next ASCII digit at or after i (n_ if none).
    std::size_t next_digit(std::size_t i) const {
        if constexpr (std::endian::native == std::endian::little) {
            for (; i + 8 <= n_; i += 8)
                if (const std::uint64_t m = digit_mask(s_.data() + i)) return i + (std::countr_zero(m) >> 3);
        }
        while (i < n_ && !is_digit(s_[i])) ++i;
        return i;
    }

    // A match must not run into an e-mail address found by the pre-pass.
    bool clear_of_email(std::size_t end) const { return end <= email_begin_; }

    // The end of a number: not inside a word, and not continued as a longer
    // number ("09/27/2025", "123.45", "12-34-56-78").
    bool number_ends(std::size_t e) const {
        if (word_at(s_, e)) return false;
        const char c = at(e);
        return !((c == '/' || c == '.' || c == '-' || c == ',') && is_digit(at(e + 1)));
    }

    std::size_t digits_from(std::size_t i) const {
        std::size_t j = i;
        while (j < n_ && is_digit(s_[j])) ++j;
        return j - i;
    }

    Groups read_groups(std::size_t i, bool consistent) const {
        Groups g;
        char sep = 0;
        std::size_t p = i;
        while (g.count < Groups::kMax) {
            const std::size_t len = digits_from(p);
            g.len[static_cast<std::size_t>(g.count)] = len;
            g.end[static_cast<std::size_t>(g.count)] = p + len;
            ++g.count;
            p += len;
            const char c = at(p);
            if (!((c == ' ' || c == '-') && is_digit(at(p + 1)))) break;
            if (consistent && sep != 0 && c != sep) break;
            sep = c;
            ++p;
        }
        return g;
    }

    // Case-insensitive ASCII phrase at i; a space in `words` matches one or
    // more spaces. The phrase must end at a word boundary.
    std::size_t phrase(std::size_t i, std::string_view words) const {
        std::size_t p = i;
        for (const char want : words) {
            if (want == ' ') {
                if (at(p) != ' ') return kNone;
                while (at(p) == ' ') ++p;
            } else {
                // Phrases are lowercase; c | 0x20 lowercases an ASCII letter.
                const char c = at(p);
                if (c != want && !(want >= 'a' && (c | 0x20) == want)) return kNone;
                ++p;
            }
        }
        if (is_alnum(words.back()) && word_at(s_, p)) return kNone;
        return p;
    }

    template <std::size_t N>
    std::size_t any_phrase(std::size_t i, const std::array<std::string_view, N>& phrases) const {
        for (const std::string_view ph : phrases)
            if (const std::size_t e = phrase(i, ph); e != kNone) return e;
        return kNone;
    }

    // Punctuation between a keyword and its value: "cvv: 123", "acct #12345678",
    // "cvv (123)", "exp. 09/27", "cvv=\"123\"". (keyword_led() walks back over
    // the same.)
    static bool filler_punct(char c) {
        return c == ':' || c == '-' || c == '=' || c == '#' || c == '.' || c == '(' || c == '"';
    }

    std::size_t skip_spaces(std::size_t p) const {
        while (at(p) == ' ' || at(p) == '\t') ++p;
        return p;
    }

    // Skips what people put between a keyword and its value: "cvv is 123",
    // "account no. 12345678", "expiry date: 09/27".
    template <std::size_t N>
    std::size_t skip_filler(std::size_t p, const std::array<std::string_view, N>& words) const {
        for (int k = 0; k < 6; ++k) {
            const std::size_t q = skip_spaces(p);
            if (filler_punct(at(q))) {
                p = q + 1;
                continue;
            }
            const std::size_t e = any_phrase(q, words);
            if (e == kNone) return q;
            p = e;
        }
        return skip_spaces(p);
    }

    // Separators between details given together: "12-34-56, 12345678",
    // "4111... 09/27 123", "12345678 and 12-34-56".
    std::size_t skip_joiners(std::size_t p) const {
        for (int k = 0; k < 4; ++k) {
            const char c = at(p);
            if (c == ' ' || c == ',' || c == ';' || c == '/' || c == '&') {
                ++p;
            } else if (const std::size_t e = phrase(p, "and"); e != kNone) {
                p = e;
            } else {
                break;
            }
        }
        return p;
    }

    // Dispatch ---------------------------------------------------------------

    std::size_t at_digit(std::size_t i) {
        // Short numbers in prose ("31", "2025", "06/01") start nothing: every
        // scanner needs 6+ digits in a row or a ' '/'-' and more digits.
        const std::size_t run = digits_from(i);
        const char next = at(i + run);
        if (run < 6 && !((next == ' ' || next == '-') && is_digit(at(i + run + 1)))) return kNone;
        if (std::size_t e = card(i); e != kNone && clear_of_email(e)) {
            sink_.add(Kind::Card, i, e);
            return card_tail(e);
        }
        if (mode_ == Mode::Cards) return kNone;
        if (std::size_t e = phone(i); e != kNone && clear_of_email(e)) {
            sink_.add(Kind::Phone, i, e);
            return e;
        }
        return bank_details(i);
    }

    // Tries everything that could involve the run of digits at d, in the
    // order a left-to-right reading meets their starts.
    std::size_t at_run(std::size_t d, std::size_t lo) {
        if (mode_ == Mode::All && d > lo) {
            // A word of 1-3 letters ending at d ("QQ123456C", "SW1A 1AA",
            // "GIR0AA"), or of 2-3 letters and a space ("QQ 12 34 56 C").
            std::size_t u = d;
            std::size_t most = 0;
            if (is_alpha(s_[d - 1])) {
                u = d - 1;
                most = 3;
            } else if (s_[d - 1] == ' ' && d - 1 > lo && is_alpha(s_[d - 2])) {
                u = d - 2;
                most = 4;
            }
            if (u < d) {
                while (u > lo && d - u < most && is_alpha(s_[u - 1])) --u;
                if (!word_before(s_, u)) {
                    if (std::size_t e = nino(u); e != kNone && clear_of_email(e)) {
                        sink_.add(Kind::Nino, u, e);
                        return e;
                    }
                    if (std::size_t e = postcode(u); e != kNone && clear_of_email(e)) {
                        sink_.add(Kind::Postcode, u, e);
                        return e;
                    }
                }
            }
            // '+' and '(' are not word characters: a phone may follow a word.
            if (s_[d - 1] == '+' || s_[d - 1] == '(') {
                if (std::size_t e = phone(d - 1); e != kNone && clear_of_email(e)) {
                    sink_.add(Kind::Phone, d - 1, e);
                    return e;
                }
            }
        }
        if (word_before(s_, d)) return kNone;
        if (std::size_t e = keyword_led(d, lo); e != kNone) return e;
        return at_digit(d);
    }

    // Cards ------------------------------------------------------------------

    // 13-19 digits, contiguous or in groups (4-4-4-4[-3], 4-6-5, 4-6-4),
    // Luhn-valid. The first digit (major industry identifier) must be one of
    // payment cards, 2-6 or 8: this keeps millisecond timestamps (1...),
    // 0-led numbers and 9-led vendor ids out.
    std::size_t card(std::size_t i) const {
        const char first = s_[i];
        if (!((first >= '2' && first <= '6') || first == '8')) return kNone;
        const Groups g = read_groups(i, true);
        if (g.len[0] >= 13) {
            if (g.len[0] <= 19 && !word_at(s_, g.end[0]) && luhn_valid(s_.substr(i, g.len[0])))
                return g.end[0];
            return kNone;
        }
        if (g.len[0] != 4) return kNone;
        for (int k = g.count; k >= 3; --k) {
            const auto last = static_cast<std::size_t>(k - 1);
            std::size_t total = 0;
            bool fours = true;
            for (std::size_t j = 0; j <= last; ++j) {
                total += g.len[j];
                if (j < last && g.len[j] != 4) fours = false;
            }
            const bool amex = k == 3 && g.len[1] == 6 && (g.len[2] == 5 || g.len[2] == 4);
            if (total < 13 || total > 19 || !(amex || (fours && g.len[last] <= 4))) continue;
            if (word_at(s_, g.end[last])) continue;
            char buf[19];
            std::size_t nd = 0;
            for (std::size_t p = i; p < g.end[last]; ++p)
                if (is_digit(s_[p])) buf[nd++] = s_[p];
            if (luhn_valid(std::string_view(buf, nd))) return g.end[last];
        }
        return kNone;
    }

    // An expiry and a 3-4 digit code typed straight after a card number
    // ("4111 1111 1111 1111 09/27 123") are card data even without keywords.
    std::size_t card_tail(std::size_t e) {
        bool had_expiry = false, had_cvv = false;
        for (int k = 0; k < 2; ++k) {
            const std::size_t p = skip_joiners(e);
            if (p == e || !is_digit(at(p))) break;
            if (std::size_t x = expiry_value(p); !had_expiry && x != kNone && clear_of_email(x)) {
                sink_.add(Kind::Expiry, p, x);
                e = x;
                had_expiry = true;
            } else if (std::size_t v = cvv_value(p); !had_cvv && v != kNone && clear_of_email(v)) {
                sink_.add(Kind::Cvv, p, v);
                e = v;
                had_cvv = true;
            } else {
                break;
            }
        }
        return e;
    }

    std::size_t cvv_value(std::size_t p) const {
        const std::size_t len = digits_from(p);
        return len >= 3 && len <= 4 && number_ends(p + len) ? p + len : kNone;
    }

    // MM/YY, MM/YYYY, M/YY, MM-YY, MM.YY, or MMYY; month 1-12.
    std::size_t expiry_value(std::size_t p) const {
        const std::size_t m_len = digits_from(p);
        if (m_len == 4) {
            const int month = digit(s_[p]) * 10 + digit(s_[p + 1]);
            return month >= 1 && month <= 12 && number_ends(p + 4) ? p + 4 : kNone;
        }
        if (m_len < 1 || m_len > 2) return kNone;
        const int month = m_len == 1 ? digit(s_[p]) : digit(s_[p]) * 10 + digit(s_[p + 1]);
        if (month < 1 || month > 12) return kNone;
        const char sep = at(p + m_len);
        if (sep != '/' && sep != '-' && sep != '.') return kNone;
        const std::size_t y = p + m_len + 1;
        const std::size_t y_len = digits_from(y);
        if (y_len == 4) {
            if (!(s_[y] == '2' && s_[y + 1] == '0') && !(s_[y] == '1' && s_[y + 1] == '9')) return kNone;
        } else if (y_len != 2) {
            return kNone;
        }
        return number_ends(y + y_len) ? y + y_len : kNone;
    }

    // Phones -----------------------------------------------------------------

    // A UK national significant number (the digits after 0 or +44): 10 digits
    // starting 1, 2, 3, 5, 7, 8 or 9; 9 digits for some 01 areas and 0800.
    static bool uk_nsn(const char* d, std::size_t len) {
        if (len == 10) return std::strchr("1235789", d[0]) != nullptr;
        if (len == 9) return d[0] == '1' || (d[0] == '8' && d[1] == '0' && d[2] == '0');
        return false;
    }

    // UK numbers: 0..., +44..., +44 (0)..., 0044..., (0151) ..., and the bare
    // 44... form WhatsApp uses (contiguous, or "44 7700 900312"), geographic
    // or mobile only so that other 44-led numbers are left alone.
    std::size_t phone(std::size_t i) const {
        if (s_[i] != '0' && s_[i] != '4' && s_[i] != '+' && s_[i] != '(') return kNone;
        std::size_t p = i;
        bool plus44 = false;
        char d[16];
        std::size_t nd = 0;
        std::array<std::size_t, 8> cand_nd{}, cand_end{};
        int ncand = 0;

        if (s_[p] == '+') {
            if (!(at(p + 1) == '4' && at(p + 2) == '4')) return kNone;
            plus44 = true;
            p += 3;
            if (at(p) == ' ' || at(p) == '-') ++p;
            if (at(p) == '(' && at(p + 1) == '0' && at(p + 2) == ')') {
                p += 3;
                if (at(p) == ' ' || at(p) == '-') ++p;
            }
            if (!is_digit(at(p))) return kNone;
        } else if (s_[p] == '(') {
            // "(0151) 496 0732": the area code in brackets is the first group.
            const std::size_t len = digits_from(p + 1);
            if (len < 3 || len > 6 || s_[p + 1] != '0' || at(p + 1 + len) != ')') return kNone;
            for (std::size_t k = 0; k < len; ++k) d[nd++] = s_[p + 1 + k];
            p += len + 2;
            if (at(p) == ' ' || at(p) == '-') ++p;
            if (!is_digit(at(p))) return kNone;
        }
        const bool first_is_44 =
            !plus44 && nd == 0 && digits_from(p) == 2 && s_[p] == '4' && s_[p + 1] == '4';
        const Groups g = read_groups(p, false);
        for (int k = 0; k < g.count; ++k) {
            const auto j = static_cast<std::size_t>(k);
            if (nd + g.len[j] > sizeof d) break;
            for (std::size_t q = g.end[j] - g.len[j]; q < g.end[j]; ++q) d[nd++] = s_[q];
            cand_nd[j] = nd;
            cand_end[j] = g.end[j];
            ncand = k + 1;
        }
        const bool contiguous = g.count == 1 && nd == g.len[0];
        for (int k = ncand - 1; k >= 0; --k) {
            const auto j = static_cast<std::size_t>(k);
            const std::size_t len = cand_nd[j];
            bool ok = false;
            if (plus44) {
                const std::size_t skip = d[0] == '0' ? 1 : 0; // "+44 07700..." is a common slip
                ok = uk_nsn(d + skip, len - skip);
            } else if (len > 4 && d[0] == '0' && d[1] == '0' && d[2] == '4' && d[3] == '4') {
                ok = uk_nsn(d + 4, len - 4);
            } else if (d[0] == '0') {
                ok = uk_nsn(d + 1, len - 1);
            } else if ((contiguous || first_is_44) && len > 2 && d[0] == '4' && d[1] == '4') {
                ok = std::strchr("1237", d[2]) != nullptr && uk_nsn(d + 2, len - 2);
            }
            if (ok && !word_at(s_, cand_end[j])) return cand_end[j];
        }
        return kNone;
    }

    // NINO -------------------------------------------------------------------

    // Two letters, six digits (together or as 12 34 56), and an A-D suffix,
    // spaces optional. The prefix is NOT checked against the allocation rules
    // (D, F, I, Q, U, V first; D, F, I, O, Q, U, V second; BG, GB, NK, KN,
    // TN, NT, ZZ): test data uses the never-issued QQ, typos happen, and
    // redacting a not-quite-valid NINO is the safe failure.
    std::size_t nino(std::size_t i) const {
        if (!is_alpha(s_[i]) || !is_alpha(at(i + 1))) return kNone;
        std::size_t p = i + 2;
        if (at(p) == ' ') ++p;
        const std::size_t run = digits_from(p);
        if (run == 6) {
            p += 6;
        } else if (run == 2 && at(p + 2) == ' ' && digits_from(p + 3) == 2 && at(p + 5) == ' ' &&
                   digits_from(p + 6) == 2) {
            p += 8;
        } else {
            return kNone;
        }
        if (at(p) == ' ') ++p;
        const char suffix = lower(at(p));
        if (suffix < 'a' || suffix > 'd' || word_at(s_, p + 1)) return kNone;
        return p + 1;
    }

    // Postcodes --------------------------------------------------------------

    std::size_t postcode(std::size_t i) const {
        std::size_t r = i;
        while (r < n_ && is_alnum(s_[r])) ++r;
        const std::size_t len = r - i;
        if (len >= 5 && len <= 7 && !word_at(s_, r)) {
            // Without the space: the inward code is always the last three.
            if (valid_outward(s_.substr(i, len - 3)) && valid_inward(s_.substr(r - 3, 3))) return r;
            return kNone;
        }
        if (len >= 2 && len <= 4 && at(r) == ' ') {
            const std::size_t in = r + 1;
            if (in + 3 <= n_ && valid_inward(s_.substr(in, 3)) && !word_at(s_, in + 3) &&
                valid_outward(s_.substr(i, len)))
                return in + 3;
        }
        return kNone;
    }

    // Bank details -----------------------------------------------------------

    enum class SortForm { None, Dashed, Spaced, Plain };

    // 12-34-56, 12 34 56 or 123456 at p; `end` receives where it stops.
    SortForm sort_code_value(std::size_t p, std::size_t& end) const {
        const std::size_t run = digits_from(p);
        if (run == 6) {
            end = p + 6;
            return number_ends(end) ? SortForm::Plain : SortForm::None;
        }
        if (run != 2) return SortForm::None;
        const char sep = at(p + 2);
        if ((sep != '-' && sep != ' ') || digits_from(p + 3) != 2 || at(p + 5) != sep ||
            digits_from(p + 6) != 2)
            return SortForm::None;
        end = p + 8;
        if (!number_ends(end)) return SortForm::None;
        if (sep == '-') return SortForm::Dashed;
        // "10 20 30 40" is a list of numbers, not a sort code.
        const std::size_t more = at(end) == ' ' ? digits_from(end + 1) : 0;
        return more == 1 || more == 2 ? SortForm::None : SortForm::Spaced;
    }

    // Eight digits, or 4-4 with one space or dash.
    std::size_t account_value(std::size_t p) const {
        const std::size_t run = digits_from(p);
        if (run == 8) return number_ends(p + 8) ? p + 8 : kNone;
        if (run == 4 && (at(p + 4) == ' ' || at(p + 4) == '-') && digits_from(p + 5) == 4)
            return number_ends(p + 9) ? p + 9 : kNone;
        return kNone;
    }

    // A dd-mm-yy date reads like a dashed sort code; without context a date wins.
    bool looks_like_date(std::size_t p) const {
        const int day = digit(s_[p]) * 10 + digit(s_[p + 1]);
        const int month = digit(s_[p + 3]) * 10 + digit(s_[p + 4]);
        return day >= 1 && day <= 31 && month >= 1 && month <= 12;
    }

    std::size_t sort_code_then_account(std::size_t sb, std::size_t se) {
        sink_.add(Kind::SortCode, sb, se);
        const std::size_t p = skip_joiners(se);
        if (p != se && is_digit(at(p))) {
            if (const std::size_t ae = account_value(p); ae != kNone && clear_of_email(ae)) {
                sink_.add(Kind::Account, p, ae);
                return ae;
            }
        }
        return se;
    }

    std::size_t account_then_sort_code(std::size_t ab, std::size_t ae) {
        sink_.add(Kind::Account, ab, ae);
        const std::size_t p = skip_joiners(ae);
        std::size_t se = 0;
        if (p != ae && is_digit(at(p))) {
            const SortForm f = sort_code_value(p, se);
            if ((f == SortForm::Dashed || f == SortForm::Spaced) && clear_of_email(se)) {
                sink_.add(Kind::SortCode, p, se);
                return se;
            }
        }
        return ae;
    }

    // Bank details without a keyword: "12-34-56" on its own (unless it reads
    // as a date), or a sort code and an 8-digit account number side by side
    // in either order ("12 34 56 12345678", "12345678, 12-34-56").
    std::size_t bank_details(std::size_t i) {
        // Not the tail of a longer dashed or dotted number ("12-34-56-78").
        if (i >= 2 && (s_[i - 1] == '-' || s_[i - 1] == '.' || s_[i - 1] == '/') && is_digit(s_[i - 2]))
            return kNone;
        std::size_t se = 0;
        const SortForm f = sort_code_value(i, se);
        if ((f == SortForm::Dashed || f == SortForm::Spaced) && clear_of_email(se)) {
            const std::size_t p = skip_joiners(se);
            const std::size_t ae = p != se && is_digit(at(p)) ? account_value(p) : kNone;
            if (ae != kNone && clear_of_email(ae)) {
                sink_.add(Kind::SortCode, i, se);
                sink_.add(Kind::Account, p, ae);
                return ae;
            }
            if (f == SortForm::Dashed && !looks_like_date(i)) {
                sink_.add(Kind::SortCode, i, se);
                return se;
            }
            return kNone;
        }
        const std::size_t ae = account_value(i);
        if (ae == kNone || !clear_of_email(ae)) return kNone;
        const std::size_t p = skip_joiners(ae);
        if (p == ae || !is_digit(at(p))) return kNone;
        const SortForm g = sort_code_value(p, se);
        if ((g != SortForm::Dashed && g != SortForm::Spaced) || !clear_of_email(se)) return kNone;
        sink_.add(Kind::Account, i, ae);
        sink_.add(Kind::SortCode, p, se);
        return se;
    }

    // Keyword-led values ------------------------------------------------------

    static constexpr std::uint32_t key3(const char (&k)[4]) {
        return static_cast<std::uint32_t>(k[0]) << 16 | static_cast<std::uint32_t>(k[1]) << 8 |
               static_cast<std::uint32_t>(k[2]);
    }

    // A keyword phrase at i whose value (after filler) is at `want`. The
    // keyword is kept and its value replaced ("cvv [CVV]"), so the text still
    // says what was given.
    std::size_t keyword(std::size_t i, std::size_t want) {
        const char c1 = at(i + 1);
        const char c2 = at(i + 2);
        // The first three letters rule out nearly every word in one switch.
        // (c | 0x20 lowercases letters and leaves digits and '/' alone;
        // phrase() then checks exactly.)
        const std::uint32_t key = static_cast<std::uint32_t>(static_cast<unsigned char>(s_[i] | 0x20)) << 16 |
                                  static_cast<std::uint32_t>(static_cast<unsigned char>(c1 | 0x20)) << 8 |
                                  static_cast<unsigned char>(c2 | 0x20);
        std::size_t k = kNone;
        switch (key) {
        case key3("cvv"):
        case key3("cvc"):
        case key3("cv2"):
        case key3("csc"):
        case key3("cod"):
        case key3("dig"):
        case key3("num"):
        case key3("sec"):
            if ((k = any_phrase(i, kCvvWords)) != kNone && skip_filler(k, kCvvFiller) == want)
                return cvv_after(k);
            break;
        case key3("sor"):
        case key3("s/c"):
            if (mode_ == Mode::All && (k = any_phrase(i, kSortWords)) != kNone) {
                const std::size_t p = skip_filler(k, kNumberFiller);
                std::size_t se = 0;
                if (p == want && sort_code_value(p, se) != SortForm::None && clear_of_email(se))
                    return sort_code_then_account(p, se);
            }
            break;
        case key3("exp"):
        case key3("val"):
        case key3("goo"):
            if ((k = any_phrase(i, kExpiryWords)) != kNone) {
                const std::size_t p = skip_filler(k, kExpiryFiller);
                const std::size_t e = p == want ? expiry_value(p) : kNone;
                if (e != kNone && clear_of_email(e)) {
                    sink_.add(Kind::Expiry, p, e);
                    return e;
                }
            }
            break;
        case key3("acc"):
        case key3("a/c"):
            if (mode_ == Mode::All && (k = any_phrase(i, kAccountWords)) != kNone) {
                const std::size_t p = skip_filler(k, kNumberFiller);
                const std::size_t e = p == want ? account_value(p) : kNone;
                if (e != kNone && clear_of_email(e))
                    return account_then_sort_code(p, e);
            }
            break;
        default:
            break;
        }
        return kNone;
    }

    // A keyword phrase and its filler ending at d, found by walking back over
    // the words before d (at most 16: a phrase of four words and filler).
    std::size_t keyword_led(std::size_t d, std::size_t lo) {
        // Word starts, nearest first, back over what keyword phrases and
        // their filler are made of; the forward match below checks exactly.
        std::array<std::size_t, 16> starts;
        std::size_t n = 0;
        for (std::size_t q = d; n < starts.size() && q > lo;) {
            const char c = s_[q - 1];
            if (is_alnum(c)) {
                std::size_t t = q - 1;
                while (t > lo && is_alnum(s_[t - 1])) --t;
                if (!vocabulary_word(t, q)) break; // no phrase reaches across it
                starts[n++] = t;
                q = t;
            } else if (c == ' ' || c == '\t' || filler_punct(c) || c == '/' || c == '\'') {
                --q;
            } else {
                break;
            }
        }
        if (n == 0) return kNone; // the usual case: no keyword words before the number
        std::size_t se = 0;
        const bool shaped = cvv_value(d) != kNone || expiry_value(d) != kNone ||
                            (mode_ == Mode::All &&
                             (sort_code_value(d, se) != SortForm::None || account_value(d) != kNone));
        if (!shaped) return kNone;
        while (n > 0) { // earliest first, as a left-to-right reading would
            const std::size_t u = starts[--n];
            if (!kKeywordInitial[static_cast<unsigned char>(s_[u])] || word_before(s_, u)) continue;
            if (const std::size_t e = keyword(u, d); e != kNone) return e;
        }
        return kNone;
    }

    std::size_t cvv_after(std::size_t k) {
        const std::size_t p = skip_filler(k, kCvvFiller);
        if (const std::size_t e = cvv_value(p); e != kNone && clear_of_email(e)) {
            sink_.add(Kind::Cvv, p, e);
            return e;
        }
        return kNone;
    }

    // E-mail -----------------------------------------------------------------

    static bool local_char(char c) {
        return is_alnum(c) || (c != '\0' && std::strchr("._%+-'", c) != nullptr);
    }

    // Steps left over one code point that may belong to an address (ASCII
    // local-part characters, or a letter of any script); 0 if none.
    std::size_t email_char_before(std::size_t i) const {
        if (i == 0) return 0;
        if (is_ascii(s_[i - 1])) return local_char(s_[i - 1]) ? 1 : 0;
        const CodePoint cp = decode_before(s_, i);
        return cp.valid && is_word_cp(cp.cp) ? cp.len : 0;
    }

    std::size_t domain_char_at(std::size_t i) const {
        if (i >= n_) return 0;
        const char c = s_[i];
        if (is_ascii(c)) return is_alnum(c) || c == '-' || c == '.' ? 1 : 0;
        const CodePoint cp = decode(s_, i);
        return cp.valid && is_word_cp(cp.cp) ? cp.len : 0;
    }

    void find_emails() {
        std::size_t from = 0;
        while (from < n_) {
            const void* hit = std::memchr(s_.data() + from, '@', n_ - from);
            if (!hit) return;
            const auto a = static_cast<std::size_t>(static_cast<const char*>(hit) - s_.data());
            from = a + 1;
            std::size_t lb = a;
            while (const std::size_t step = email_char_before(lb)) lb -= step;
            while (lb < a && s_[lb] == '.') ++lb;
            if (lb == a || (!emails_.empty() && lb < emails_.back().end)) continue;
            std::size_t de = a + 1;
            while (const std::size_t step = domain_char_at(de)) de += step;
            while (de > a + 1 && (s_[de - 1] == '.' || s_[de - 1] == '-')) --de;
            // At least two labels, none empty, and a top-level label of 2+ letters.
            const std::string_view domain = s_.substr(a + 1, de - a - 1);
            const std::size_t dot = domain.rfind('.');
            if (dot == std::string_view::npos || dot == 0 || domain.find("..") != std::string_view::npos ||
                domain.front() == '.' || domain.size() - dot - 1 < 2)
                continue;
            bool tld_ok = true;
            for (const char c : domain.substr(dot + 1))
                if (is_ascii(c) && !is_alpha(c)) tld_ok = false;
            if (!tld_ok) continue;
            emails_.push_back({lb, de});
            from = de;
        }
    }
};

// Dates --------------------------------------------------------------------------

struct Ymd {
    int y, m, d;
};

bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int days_in_month(int y, int m) {
    static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : kDays[m - 1];
}

// Reads exactly `len` digits at s[p] into `out`.
bool fixed(std::string_view s, std::size_t p, std::size_t len, int& out) {
    if (p + len > s.size()) return false;
    out = 0;
    for (std::size_t k = 0; k < len; ++k) {
        if (!is_digit(s[p + k])) return false;
        out = out * 10 + digit(s[p + k]);
    }
    return true;
}

std::string_view trim(std::string_view s) {
    auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
    while (!s.empty() && space(s.front())) s.remove_prefix(1);
    while (!s.empty() && space(s.back())) s.remove_suffix(1);
    return s;
}

// The time part of an RFC 3339 date-time after the 'T': HH:MM[:SS[.frac]]
// then Z or ±HH:MM, both optional (local times in vendor exports have none).
bool valid_time(std::string_view t) {
    int h = 0, mi = 0, sec = 0;
    if (!fixed(t, 0, 2, h) || t.size() < 5 || t[2] != ':' || !fixed(t, 3, 2, mi) || h > 23 || mi > 59)
        return false;
    std::size_t p = 5;
    if (p < t.size() && t[p] == ':') {
        if (!fixed(t, p + 1, 2, sec) || sec > 60) return false; // 60: leap second
        p += 3;
        if (p < t.size() && (t[p] == '.' || t[p] == ',')) {
            const std::size_t start = ++p;
            while (p < t.size() && is_digit(t[p])) ++p;
            if (p == start) return false;
        }
    }
    if (p == t.size()) return true;
    if ((t[p] == 'Z' || t[p] == 'z') && p + 1 == t.size()) return true;
    int oh = 0, om = 0;
    return (t[p] == '+' || t[p] == '-') && t.size() == p + 6 && fixed(t, p + 1, 2, oh) &&
           t[p + 3] == ':' && fixed(t, p + 4, 2, om) && oh <= 23 && om <= 59;
}

// ISO date, RFC 3339 date-time (the date as written, whatever the offset), or
// UK day-first d/m/yyyy.
std::optional<Ymd> parse_date(std::string_view s) {
    s = trim(s);
    Ymd v{};
    if (s.size() >= 10 && s[4] == '-' && s[7] == '-') {
        if (!fixed(s, 0, 4, v.y) || !fixed(s, 5, 2, v.m) || !fixed(s, 8, 2, v.d)) return std::nullopt;
        if (s.size() > 10) {
            const char t = s[10];
            if ((t != 'T' && t != 't' && t != ' ') || !valid_time(s.substr(11))) return std::nullopt;
        }
    } else {
        const std::size_t a = s.find('/');
        const std::size_t b = a == std::string_view::npos ? a : s.find('/', a + 1);
        if (b == std::string_view::npos || a < 1 || a > 2 || b - a - 1 < 1 || b - a - 1 > 2 ||
            s.size() - b - 1 != 4 || !fixed(s, 0, a, v.d) || !fixed(s, a + 1, b - a - 1, v.m) ||
            !fixed(s, b + 1, 4, v.y))
            return std::nullopt;
    }
    if (v.y < 1 || v.m < 1 || v.m > 12 || v.d < 1 || v.d > days_in_month(v.y, v.m)) return std::nullopt;
    return v;
}

// Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
Ymd civil_from_days(std::int64_t z) {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const auto doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    const unsigned d = doy - (153 * mp + 2) / 5 + 1;
    const unsigned m = mp < 10 ? mp + 3 : mp - 9;
    return {static_cast<int>(y + (m <= 2)), static_cast<int>(m), static_cast<int>(d)};
}

// Pseudonym normalisation --------------------------------------------------------

bool is_space_cp(char32_t c) {
    return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200B) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

// Simple lowercase mapping for Latin-1, Latin Extended-A, Greek and Cyrillic:
// enough for the names and identifiers a council sees ("ŁĘCKA" = "łęcka").
char32_t lower_cp(char32_t c) {
    if (c < 0x80) return static_cast<char32_t>(lower(static_cast<char>(c)));
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 0x20;
    if (c >= 0x100 && c <= 0x17F) {
        if (c == 0x130 || c == 0x131 || c == 0x138 || c == 0x149 || c == 0x17F) return c;
        if (c == 0x178) return 0xFF;
        const bool odd_upper = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
        return odd_upper ? (c % 2 == 1 ? c + 1 : c) : (c % 2 == 0 ? c + 1 : c);
    }
    if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 0x20;
    if (c >= 0x410 && c <= 0x42F) return c + 0x20;
    if (c >= 0x400 && c <= 0x40F) return c + 0x50;
    return c;
}

void append_utf8(std::string& out, char32_t c) {
    if (c < 0x80) {
        out += static_cast<char>(c);
    } else if (c < 0x800) {
        out += static_cast<char>(0xC0 | (c >> 6));
        out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        out += static_cast<char>(0xE0 | (c >> 12));
        out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (c >> 18));
        out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (c & 0x3F));
    }
}

std::string normalise(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (std::size_t i = 0; i < value.size();) {
        if (is_ascii(value[i])) {
            const char c = value[i++];
            if (!is_space_cp(static_cast<char32_t>(c))) out += lower(c);
            continue;
        }
        const CodePoint cp = decode(value, i);
        if (!cp.valid) {
            out += value[i]; // invalid bytes are kept as they are
        } else if (!is_space_cp(cp.cp)) {
            append_utf8(out, lower_cp(cp.cp));
        }
        i += cp.len;
    }
    return out;
}

// How many ASCII digits the text has, counted eight bytes at a time up to
// at least `cap` (the count stops growing there). Every kind of PII but
// e-mail needs one (GIR 0AA has only one; card data needs three), so text
// without numbers is settled here without scanning.
std::size_t count_digits(std::string_view text, std::size_t cap) {
    const std::size_t n = text.size();
    std::size_t count = 0;
    // (Digits are few in most text: clearing one bit at a time is quicker
    // than std::popcount, which the x86-64 baseline has no instruction for.)
    for (std::size_t i = 0; i < n && count < cap; i += 8)
        for (std::uint64_t m = digit_mask(load_at(text, i)); m != 0; m &= m - 1) ++count;
    return count;
}

// The first two letters of every card keyword phrase (CVV and expiry), as
// [first - 'a'][second - 'a']: card data without a card number (13-19
// digits) is a keyword phrase and a short value, and every such phrase
// starts with two letters.
constexpr std::array<std::array<bool, 26>, 26> kCardKeywordStarts = [] {
    std::array<std::array<bool, 26>, 26> t{};
    auto add = [&](std::string_view ph) {
        t[static_cast<std::size_t>(ph[0] - 'a')][static_cast<std::size_t>(ph[1] - 'a')] = true;
    };
    for (const std::string_view ph : kCvvWords) add(ph);
    for (const std::string_view ph : kExpiryWords) add(ph);
    return t;
}();

template <std::size_t N>
constexpr bool letter_led(const std::array<std::string_view, N>& phrases) {
    for (const std::string_view ph : phrases)
        if (ph.size() < 2 || ph[0] < 'a' || ph[0] > 'z' || ph[1] < 'a' || ph[1] > 'z') return false;
    return true;
}
static_assert(letter_led(kCvvWords) && letter_led(kExpiryWords),
              "card_data_possible() relies on every card keyword starting with two letters");

// Whether `text` has 13 digits in one chain of digit groups joined by single
// spaces or dashes, as every card number is written ("4111 1111 1111 1111",
// "4111-1111-1111-1111", "4111111111111111"); a date and time
// ("2026-11-29T23:01:22Z") has 14 digits but in chains of 8 and 2.
bool has_card_length_chain(std::string_view text) {
    std::size_t digits = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (is_digit(c)) {
            if (++digits >= 13) return true;
        } else if (!((c == ' ' || c == '-') && digits > 0 && i + 1 < text.size() && is_digit(text[i + 1]))) {
            digits = 0;
        }
    }
    return false;
}

// Whether the card scanner could find anything in `text`: a card number
// needs 13 digits in one chain (above), a CVV or expiry without one needs a keyword, which
// starts with one of the letter pairs above (in any case). Most values
// (dates, phone numbers, references, postcodes) have neither, and are
// settled here without a scan.
bool card_data_possible(std::string_view text) {
    // Card data has three digits at least (a CVV).
    const std::size_t digits = count_digits(text, 13);
    if (digits < 3) return false;
    if (digits >= 13 && has_card_length_chain(text)) return true;
    // The keyword scanner (keyword_led) takes a phrase only where a word
    // starts, so only letters after a byte that is not an ASCII letter or
    // digit are looked at: a few per value, found eight bytes at a time.
    const auto letter = [](char c) { return static_cast<unsigned>((c | 0x20) - 'a'); };
    const std::size_t n = text.size();
    std::uint64_t alnum_before = 0; // the last byte of the previous eight, if alnum, at the first's place
    for (std::size_t i = 0; i < n; i += 8) {
        const std::uint64_t x = load_at(text, i);
        const std::uint64_t letters = letter_mask(x);
        const std::uint64_t alnum = letters | digit_mask(x);
        for (std::uint64_t m = letters & ~((alnum << 8) | alnum_before); m != 0; m &= m - 1) {
            const std::size_t at = i + (static_cast<std::size_t>(std::countr_zero(m)) >> 3);
            if (at + 1 >= n) break;
            const unsigned b = letter(text[at + 1]);
            if (b < 26 && kCardKeywordStarts[letter(text[at])][b]) return true;
        }
        alnum_before = alnum >> 56;
    }
    return false;
}

} // namespace

// Public API ---------------------------------------------------------------------

const char* placeholder(Kind kind) {
    switch (kind) {
    case Kind::Card: return "[CARD]";
    case Kind::Cvv: return "[CVV]";
    case Kind::Expiry: return "[EXPIRY]";
    case Kind::Nino: return "[NINO]";
    case Kind::Phone: return "[PHONE]";
    case Kind::Email: return "[EMAIL]";
    case Kind::SortCode: return "[SORT_CODE]";
    case Kind::Account: return "[ACCOUNT]";
    case Kind::Postcode: return "[POSTCODE]";
    }
    return "[REDACTED]";
}

std::string redact(std::string_view text, std::vector<Finding>* found) {
    if (found) found->clear();
    if (count_digits(text, 1) == 0 && text.find('@') == std::string_view::npos) return std::string(text);
    Sink sink(text, found);
    Scanner(text, Mode::All, sink).run();
    if (!sink.any()) return std::string(text);
    return sink.finish();
}

namespace {

// The scan itself, out of line: most texts are settled by
// card_data_possible(), and then need no room for a scanner.
[[gnu::noinline]] std::optional<std::string> scan_cards(std::string_view text) {
    Sink sink(text, nullptr);
    Scanner(text, Mode::Cards, sink).run();
    if (!sink.any()) return std::nullopt;
    return sink.finish();
}

} // namespace

std::optional<std::string> redact_cards(std::string_view text) {
    if (!card_data_possible(text)) return std::nullopt;
    return scan_cards(text);
}

bool luhn_valid(std::string_view digits) {
    if (digits.empty()) return false;
    int sum = 0;
    bool twice = false;
    for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
        if (!is_digit(*it)) return false;
        int d = digit(*it);
        if (twice && (d *= 2) > 9) d -= 9;
        sum += d;
        twice = !twice;
    }
    return sum % 10 == 0;
}

std::string mask(std::string_view value, int keep_last) {
    // Code point starts, counted without allocating.
    std::size_t count = 0;
    for (std::size_t i = 0; i < value.size(); ++count)
        i += is_ascii(value[i]) ? 1 : decode(value, i).len;
    const std::size_t most = count / 2; // at least half always masked
    const std::size_t keep = keep_last <= 0 ? 0 : std::min(static_cast<std::size_t>(keep_last), most);
    std::string out(count - keep, '*');
    std::size_t i = 0;
    for (std::size_t k = 0; k < count - keep; ++k) i += is_ascii(value[i]) ? 1 : decode(value, i).len;
    out.append(value.substr(i));
    return out;
}

namespace {

// HMAC-SHA256 through one context per thread, keyed once per key: the
// one-shot HMAC() looks the algorithm up and allocates its contexts on every
// call (eight allocations, and a lock the preparing threads share), which
// cost more than the hashing.
class Hmac {
public:
    Hmac() : mac_(EVP_MAC_fetch(nullptr, "HMAC", nullptr)), ctx_(mac_ ? EVP_MAC_CTX_new(mac_) : nullptr) {}
    ~Hmac() {
        EVP_MAC_CTX_free(ctx_);
        EVP_MAC_free(mac_);
    }
    Hmac(const Hmac&) = delete;
    Hmac& operator=(const Hmac&) = delete;

    // false if OpenSSL fails (the caller then gives no pseudonym).
    bool sha256(std::string_view key, std::string_view data, unsigned char* out, std::size_t& len) {
        if (!ctx_) return false;
        bool ok;
        if (keyed_ && key == key_) {
            ok = EVP_MAC_init(ctx_, nullptr, 0, nullptr) == 1; // again, with the key it has
        } else {
            static const unsigned char kEmpty = 0; // a non-null key pointer, even for no key
            char digest[] = "SHA256";
            OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
            const auto* k = key.empty() ? &kEmpty : reinterpret_cast<const unsigned char*>(key.data());
            ok = EVP_MAC_init(ctx_, k, key.size(), params) == 1;
            keyed_ = ok;
            key_.assign(key.data(), key.size());
        }
        return ok && EVP_MAC_update(ctx_, reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1 &&
               EVP_MAC_final(ctx_, out, &len, EVP_MAX_MD_SIZE) == 1;
    }

private:
    EVP_MAC* mac_;
    EVP_MAC_CTX* ctx_;
    std::string key_;
    bool keyed_ = false;
};

} // namespace

std::string pseudonym(std::string_view key, std::string_view value) {
    const std::string data = normalise(value);
    thread_local Hmac hmac;
    unsigned char mac[EVP_MAX_MD_SIZE];
    std::size_t len = 0;
    if (!hmac.sha256(key, data, mac, len)) return {};
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out(2 * len, '0');
    for (std::size_t j = 0; j < len; ++j) {
        out[2 * j] = kHex[mac[j] >> 4];
        out[2 * j + 1] = kHex[mac[j] & 0x0F];
    }
    return out;
}

std::optional<std::string> postcode_district(std::string_view postcode) {
    const std::string_view s = trim(postcode);
    std::string_view outward, inward;
    if (const std::size_t sp = s.find(' '); sp != std::string_view::npos) {
        outward = s.substr(0, sp);
        inward = s.substr(sp + 1);
    } else if (s.size() >= 5) {
        outward = s.substr(0, s.size() - 3);
        inward = s.substr(s.size() - 3);
    }
    if (!valid_outward(outward) || !valid_inward(inward)) return std::nullopt;
    std::string out(outward);
    for (char& c : out) c = static_cast<char>(is_alpha(c) ? lower(c) - 32 : c);
    return out;
}

std::optional<std::string> date_to_month(std::string_view date) {
    const auto d = parse_date(date);
    if (!d) return std::nullopt;
    char buf[8];
    buf[0] = static_cast<char>('0' + d->y / 1000);
    buf[1] = static_cast<char>('0' + d->y / 100 % 10);
    buf[2] = static_cast<char>('0' + d->y / 10 % 10);
    buf[3] = static_cast<char>('0' + d->y % 10);
    buf[4] = '-';
    buf[5] = static_cast<char>('0' + d->m / 10);
    buf[6] = static_cast<char>('0' + d->m % 10);
    return std::string(buf, 7);
}

std::optional<std::string> age_band(std::string_view date_of_birth, std::int64_t today_ms) {
    const auto dob = parse_date(date_of_birth);
    if (!dob) return std::nullopt;
    constexpr std::int64_t kDayMs = 86'400'000;
    const std::int64_t days = today_ms / kDayMs - (today_ms % kDayMs < 0 ? 1 : 0);
    const Ymd today = civil_from_days(days);
    // Birthday not yet reached this year: one year younger. A 29 February
    // birthday is reached on 1 March in other years (28 Feb < 29 Feb).
    int age = today.y - dob->y;
    if (today.m < dob->m || (today.m == dob->m && today.d < dob->d)) --age;
    if (age < 0) return std::nullopt; // in the future
    if (age < 16) return "under 16";
    if (age < 25) return "16-24";
    if (age < 35) return "25-34";
    if (age < 45) return "35-44";
    if (age < 55) return "45-54";
    if (age < 65) return "55-64";
    if (age < 75) return "65-74";
    return "75+";
}

} // namespace switchboard::pii
