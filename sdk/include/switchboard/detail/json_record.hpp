// Switchboard SDK: a single-pass JSON reader that turns one JSON document
// into record leaves. Header-only; shared by the core (`switchboard explain`,
// tests) and plugins (the jsonl source), so that a JSON line means the same
// record wherever it is read.
//
// No DOM: the bytes are walked once and each scalar is handed to a sink with
// its canonical path ("a.b[2].c", as record_data.hpp writes paths) and typed
// value (sb_value). String values without escapes point into the input;
// others are decoded into a buffer the parser reuses. (The record format keeps
// the leaves of a "fields" that comes before its "categories" as flat
// path/value pairs until the end of the line, to categorise them.) Documents
// are limited to 4 GiB.
//
// Strict (RFC 8259) with these decisions, each an error with a byte offset:
//   - the document is one object; anything but whitespace after it is an error;
//   - no trailing commas, no leading zeros, no control characters in strings,
//     only the eight JSON escapes and \uXXXX; surrogate pairs are joined and
//     written as UTF-8, a lone surrogate is an error; invalid UTF-8 (overlong,
//     surrogates, > U+10FFFF, truncated) is an error; a byte order mark is an
//     error (strip it before calling, as the jsonl source does);
//   - duplicate keys in one object are an error (a record cannot hold two
//     values at one path, and silently keeping one would lose data);
//   - nesting: every leaf path has at most kMaxPathDepth (32) segments, so a
//     container whose members would sit at segment 33 is an error even if
//     empty; array indexes above kMaxArrayIndex (65535) are an error; a path
//     longer than kMaxPathLength (512) bytes is an error;
//   - numbers: an integer literal (no fraction, no exponent) is SB_VALUE_INT
//     if it fits int64, and an ERROR otherwise ("integer out of range"): big
//     numeric ids must not be rounded into other ids silently, so vendors
//     must send them as strings. "-0" is the integer 0. Anything with a
//     fraction or exponent is SB_VALUE_FLOAT (1e308 is fine); one beyond the
//     double range (1e309) is an error; one below it (1e-400) is ±0.0;
//   - keys: path segments are [A-Za-z0-9_-]+. With JsonKeys::sanitize (the
//     default) a key is decoded and each run of other bytes becomes one '_'
//     ("Customer Name" -> "Customer_Name", "@id" -> "_id", "" -> "_"); two
//     keys of one object that map to the same name are a duplicate-key error.
//     With JsonKeys::reject such a key is an error. Category patterns are
//     written against the mapped names;
//   - empty objects and arrays produce no leaves; null is a leaf.
// Error messages are fixed texts: they never quote the input, so they may be
// logged and stored with quarantined bytes.
//
// On top of the leaf parser:
//   - the Switchboard record format, one JSON object:
//       {"meta": {"channel": "phone", "occurred_at": "2025-01-06T09:44:05Z",
//                 "external_id": "...", "subject_ref": "..."},
//        "fields": { ...any JSON tree... },
//        "categories": {"citizen.name": "identity.name", "citizen.*": "identity"},
//        "attachments": [{"name": "recording", "uri": "file:///...",
//                         "media_type": "audio/wav", "size": 2044,
//                         "sha256": "<64 hex>", "category": "media.voice"}]}
//     in any key order. Each field leaf gets the category of the most specific
//     matching pattern (path_pattern.hpp's most_specific rule), "unknown" if
//     none. Without "categories" the caller's fallback map applies. Unknown
//     top-level, meta or attachment keys are errors; meta values are strings
//     checked by record_set_meta's rules, and an empty external_id is an
//     error (the journal dedupes on it);
//   - the flat format: the whole object is the field tree, categories from a
//     caller-supplied map, and optionally external_id / occurred_at taken
//     from named leaves.
// Both fill a record through a RecordSink: DataRecordSink writes sb_record's
// data directly (core side), HostRecordSink goes through the host API table
// (plugins). One parser, two sinks.
//
// A failed read leaves the record partly filled: discard it.
#pragma once

#include <switchboard/detail/path_pattern.hpp>
#include <switchboard/detail/record_data.hpp>
#include <switchboard/plugin.h>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace sb::detail {

// How keys outside [A-Za-z0-9_-]+ are treated (see the header comment).
enum class JsonKeys { sanitize, reject };

struct JsonOptions {
    JsonKeys keys = JsonKeys::sanitize;
};

// Where and why a document was refused. `message` is a static text that
// never contains input bytes; `offset` is the byte offset in the document.
struct JsonError {
    std::size_t offset = 0;
    const char* message = nullptr;

    explicit operator bool() const { return message != nullptr; }
    // "<message> at byte <offset>"
    std::string text() const {
        if (!message) return {};
        return std::string(message) + " at byte " + std::to_string(offset);
    }
};

// Appends code point `cp` (at most 0x10FFFF, not a surrogate) as UTF-8.
inline void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

// The value of a hex digit, or -1.
inline int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Whether `p` points into `text` (compared as std::less does, so that
// pointers into other objects compare too).
inline bool points_into(std::string_view text, const char* p) {
    return std::greater_equal<const char*>()(p, text.data()) &&
           std::less<const char*>()(p, text.data() + text.size());
}

// The key rule: whether `key` may be a path segment as it is.
inline bool is_json_path_key(std::string_view key) {
    if (key.empty()) return false;
    for (char c : key)
        if (!is_key_char(c)) return false;
    return true;
}

// The sanitize mapping: each run of bytes outside [A-Za-z0-9_-] becomes one
// '_'; the empty key becomes "_".
inline std::string sanitize_json_key(std::string_view key) {
    std::string out;
    out.reserve(key.size() + 1);
    bool in_run = false;
    for (char c : key) {
        if (is_key_char(c)) {
            out.push_back(c);
            in_run = false;
        } else if (!in_run) {
            out.push_back('_');
            in_run = true;
        }
    }
    if (out.empty()) out.push_back('_');
    return out;
}

// ---------------------------------------------------------------------------
// Category maps: "pattern -> category", most specific pattern wins.

// Categories as written in configs and record lines: [a-z0-9_.]+, 64 at most.
inline bool is_category_name(std::string_view s) {
    if (s.empty() || s.size() > 64) return false;
    for (char c : s)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
            return false;
    return true;
}

class CategoryMap {
public:
    // false if the pattern or the category is malformed.
    bool add(std::string_view pattern, std::string_view category) {
        auto p = PathPattern::parse(pattern);
        if (!p || !is_category_name(category)) return false;
        rules_.emplace_back(std::move(*p), std::string(category));
        return true;
    }

    // From config lines "pattern=category" (spaces around either side are
    // ignored). nullopt and `why` (naming the entry, never a value) on error.
    static std::optional<CategoryMap> from_list(const std::vector<std::string>& lines,
                                                std::string& why) {
        CategoryMap m;
        for (std::size_t k = 0; k < lines.size(); ++k) {
            std::string_view line = lines[k];
            std::size_t eq = line.find('=');
            if (eq == std::string_view::npos) {
                why = "entry " + std::to_string(k + 1) + ": expected pattern=category";
                return std::nullopt;
            }
            std::string_view pattern = trim_space(line.substr(0, eq));
            std::string_view category = trim_space(line.substr(eq + 1));
            if (!PathPattern::parse(pattern)) {
                why = "entry " + std::to_string(k + 1) + ": malformed path pattern";
                return std::nullopt;
            }
            if (!m.add(pattern, category)) {
                why = "entry " + std::to_string(k + 1) + ": category must be [a-z0-9_.]+";
                return std::nullopt;
            }
        }
        return m;
    }

    // The category of the leaf at `path` (canonical): the most specific
    // matching pattern, first listed on a tie (as most_specific picks), or
    // "unknown". Rules whose literal first key differs cannot match, so they
    // are skipped before the full match.
    const char* category_for(std::string_view path) const {
        std::size_t cut = 0;
        while (cut < path.size() && path[cut] != '.' && path[cut] != '[') ++cut;
        std::string_view first = path.substr(0, cut);
        const std::string* best = nullptr;
        int best_score = -1;
        for (const auto& [pattern, category] : rules_) {
            std::string_view fk = pattern.first_key();
            if (!fk.empty() && fk != first) continue;
            if (!pattern.matches(path)) continue;
            int s = pattern.specificity();
            if (s > best_score) {
                best_score = s;
                best = &category;
            }
        }
        return best ? best->c_str() : "unknown";
    }

    const std::vector<std::pair<PathPattern, std::string>>& rules() const { return rules_; }
    bool empty() const { return rules_.empty(); }
    std::size_t size() const { return rules_.size(); }
    void clear() { rules_.clear(); }

private:
    std::vector<std::pair<PathPattern, std::string>> rules_;
};

// ---------------------------------------------------------------------------
// Record sinks: where the record readers put what they read.

class RecordSink {
public:
    virtual ~RecordSink() = default;
    // Strings are NUL terminated. Non-OK refuses the document.
    virtual sb_status set_meta(const char* key, const char* value) = 0;
    virtual sb_status set_field(const char* path, const sb_value& value,
                                const char* category) = 0;
    // The same, with the path's length (path[path_len] is its NUL), for
    // sinks that copy it.
    virtual sb_status set_field(const char* path, std::size_t path_len, const sb_value& value,
                                const char* category) {
        (void)path_len;
        return set_field(path, value, category);
    }
    virtual sb_status add_attachment(const sb_attachment& attachment) = 0;
};

// Core side: fills sb_record's data directly. With `envelope`, meta may also
// carry the host's keys (id, source, received_at, expires_at, category), to
// read back what record_json wrote; otherwise meta follows record_set_meta,
// as for a plugin.
class DataRecordSink final : public RecordSink {
public:
    explicit DataRecordSink(sb_record& record, bool envelope = false)
        : record_(record), envelope_(envelope) {}
    sb_status set_meta(const char* key, const char* value) override {
        return envelope_ ? record_.data.set_meta(key, value)
                         : record_set_meta(&record_, key, value);
    }
    sb_status set_field(const char* path, const sb_value& value, const char* category) override {
        return record_.data.set(path, value, category);
    }
    sb_status add_attachment(const sb_attachment& a) override {
        return record_.data.add_attachment(a);
    }

private:
    sb_record& record_;
    bool envelope_;
};

// Plugin side: fills a host-owned record through the host API table.
class HostRecordSink final : public RecordSink {
public:
    HostRecordSink(const sb_host_api* api, sb_record* record) : api_(api), record_(record) {}
    sb_status set_meta(const char* key, const char* value) override {
        return api_->record_set_meta(record_, key, value);
    }
    sb_status set_field(const char* path, const sb_value& value, const char* category) override {
        return api_->record_set(record_, path, &value, category);
    }
    sb_status add_attachment(const sb_attachment& a) override {
        return api_->record_add_attachment(record_, &a);
    }

private:
    const sb_host_api* api_;
    sb_record* record_;
};

struct RecordReadOptions {
    // Categories for lines that carry no "categories" object (may be null).
    const CategoryMap* fallback = nullptr;
    // Accept record_json's own shape: a top-level "id" and the host's meta
    // keys. Only DataRecordSink can store those.
    bool envelope = false;
    JsonKeys keys = JsonKeys::sanitize;
};

struct FlatReadOptions {
    const CategoryMap* categories = nullptr; // null: every leaf is "unknown"
    // Canonical leaf paths whose value (string or integer) also becomes the
    // meta external_id / occurred_at; empty = none.
    std::string_view external_id_field;
    std::string_view occurred_at_field;
    JsonKeys keys = JsonKeys::sanitize;
};

// ---------------------------------------------------------------------------
// The parser. Reuse one instance across documents (it keeps its buffers);
// one instance is not for two threads at once.

class JsonRecordReader {
public:
    JsonRecordReader() {
        scratch_.reserve(256);
        keys_.reserve(64);
    }

    // Walks the object in `text`, calling leaf(std::string_view path,
    // const sb_value& value) -> bool for each scalar, in document order.
    // `path` is NUL terminated (path.data()[path.size()] == 0); it and string
    // values stay valid only during the call. A false return from `leaf`
    // stops the walk with the error "field refused".
    template <class Leaf>
    bool parse(std::string_view text, Leaf&& leaf, const JsonOptions& options = {}) {
        if (!reset(text, options.keys)) return false;
        ws();
        if (!peek('{')) return fail("expected an object");
        if (!walk_object(0, leaf)) return false;
        return finish();
    }

    // The Switchboard record format (see the header comment).
    bool read_record(std::string_view text, RecordSink& out, const RecordReadOptions& options = {}) {
        if (!reset(text, options.keys)) return false;
        out_ = &out;
        have_doc_categories_ = false;
        pending_.clear();
        pending_arena_.clear();
        ws();
        if (!peek('{')) return fail("expected an object");
        ++p_;
        Frame top = open_frame();
        bool done = false;
        std::string_view key;
        const char* key_at = nullptr;
        while (next_raw_key(top, done, key, key_at)) {
            if (done) break;
            int which = key == "meta"          ? 0
                        : key == "fields"      ? 1
                        : key == "categories"  ? 2
                        : key == "attachments" ? 3
                        : (key == "id" && options.envelope) ? 4
                                                            : -1;
            if (which < 0)
                return fail_at(options.envelope
                                   ? "unknown top-level key (expected id, meta, fields, "
                                     "categories or attachments)"
                                   : "unknown top-level key (expected meta, fields, categories "
                                     "or attachments)",
                               key_at);
            bool ok = which == 0   ? read_meta(options.envelope)
                      : which == 1 ? read_fields()
                      : which == 2 ? read_categories()
                      : which == 3 ? read_attachments()
                                   : read_envelope_id();
            if (!ok) return false;
        }
        if (err_) return false;
        close_frame(top);
        if (!finish()) return false;
        // Fields read before their "categories" (or in a line without one).
        if (!pending_.empty()) {
            const CategoryMap* map = have_doc_categories_ ? &doc_categories_ : options.fallback;
            for (const Pending& pf : pending_) {
                sb_value v = pf.value;
                if (v.type == SB_VALUE_STRING && pf.str_in_arena)
                    v.str = pending_arena_.data() + pf.str_off;
                const char* path = pending_arena_.data() + pf.path_off;
                const char* cat = map ? map->category_for(std::string_view(path, pf.path_len))
                                      : "unknown";
                if (out.set_field(path, v, cat) != SB_OK)
                    return fail_at("field refused by the record", begin_ + pf.at);
            }
        }
        return true;
    }

    // The flat format: the object is the field tree.
    bool read_flat(std::string_view text, RecordSink& out, const FlatReadOptions& options = {}) {
        const CategoryMap* map = options.categories;
        auto leaf = [&](std::string_view path, const sb_value& v) {
            const char* cat = map ? map->category_for(path) : "unknown";
            if (out.set_field(path.data(), path.size(), v, cat) != SB_OK)
                return fail_at("field refused by the record", value_at_);
            if (!options.external_id_field.empty() && path == options.external_id_field &&
                !meta_from_leaf(out, SB_META_EXTERNAL_ID, v))
                return fail_at("external_id field must be a non-empty string or an integer",
                               value_at_);
            if (!options.occurred_at_field.empty() && path == options.occurred_at_field &&
                !meta_from_leaf(out, SB_META_OCCURRED_AT, v))
                return fail_at("occurred_at field must be an RFC 3339 string", value_at_);
            return true;
        };
        return parse(text, leaf, JsonOptions{options.keys});
    }

    const JsonError& error() const { return err_; }

private:
    // --- state ----------------------------------------------------------------

    struct KeyRef {
        const char* ptr;   // into the document, or null: at `off` in key_arena_
        std::uint32_t off, len;
        std::uint64_t fp;  // cheap fingerprint: length and the first and last bytes
    };
    struct Frame {
        std::size_t keys_begin;
        std::size_t arena_begin;
        std::size_t table = SIZE_MAX; // index into tables_ once the object is big
    };
    struct Pending {
        std::uint32_t path_off, path_len, str_off;
        bool str_in_arena; // a decoded string, copied; else value.str is in the document
        std::size_t at;    // document offset of the value, for errors
        sb_value value;
    };

    // Objects with more keys than this look duplicates up in a hash table
    // instead of scanning, so that a hostile 1 MiB object stays linear.
    static constexpr std::size_t kLinearKeys = 32;

    const char* begin_ = nullptr;
    const char* p_ = nullptr;
    const char* end_ = nullptr;
    JsonKeys keys_policy_ = JsonKeys::sanitize;
    JsonError err_;
    const char* value_at_ = nullptr; // start of the scalar being handed to a sink
    char path_[kMaxPathLength + 32]; // the canonical path being built (NUL added for sinks)
    std::size_t plen_ = 0;
    std::string scratch_; // decoded string values
    std::string keybuf_;  // decoded keys
    std::string keymap_;  // sanitized keys
    std::vector<KeyRef> keys_;
    std::string key_arena_;
    std::vector<std::vector<std::uint32_t>> tables_;
    std::size_t tables_used_ = 0;

    // Record format.
    RecordSink* out_ = nullptr;
    CategoryMap doc_categories_;    // the last "categories" object read...
    std::string doc_categories_text_; // ...and its bytes: the next line usually repeats them
    bool have_doc_categories_ = false;
    std::vector<Pending> pending_;
    std::string pending_arena_;
    std::string meta_key_, meta_value_;
    std::string att_[5]; // name, uri, media_type, sha256, category

    // --- basics -----------------------------------------------------------------

    bool reset(std::string_view text, JsonKeys keys) {
        begin_ = p_ = text.data();
        end_ = begin_ + text.size();
        if (!begin_) begin_ = p_ = end_ = "";
        keys_policy_ = keys;
        err_ = {};
        plen_ = 0;
        keys_.clear();
        key_arena_.clear();
        tables_used_ = 0;
        // Offsets into the document and the buffers are 32-bit.
        if (text.size() > UINT32_MAX) return fail_at("document larger than 4 GiB", begin_);
        return true;
    }

    bool fail_at(const char* message, const char* at) {
        if (!err_) {
            err_.message = message;
            err_.offset = static_cast<std::size_t>(at - begin_);
        }
        return false;
    }
    bool fail(const char* message) { return fail_at(message, p_); }

    void ws() {
        while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
    }
    bool peek(char c) const { return p_ < end_ && *p_ == c; }

    bool finish() {
        ws();
        if (p_ != end_) return fail("trailing characters after the document");
        return true;
    }

    // --- strings ------------------------------------------------------------------

    // Length of the valid UTF-8 sequence at p (lead byte >= 0x80), or 0.
    static std::size_t utf8_length(const unsigned char* p, const unsigned char* end) {
        unsigned char c = p[0];
        std::size_t len = (c >= 0xC2 && c <= 0xDF)   ? 2
                          : (c >= 0xE0 && c <= 0xEF) ? 3
                          : (c >= 0xF0 && c <= 0xF4) ? 4
                                                     : 0;
        if (len == 0 || static_cast<std::size_t>(end - p) < len) return 0;
        for (std::size_t k = 1; k < len; ++k)
            if ((p[k] & 0xC0) != 0x80) return 0;
        if (len >= 3) {
            unsigned char c1 = p[1];
            if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) ||
                (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
                return 0;
        }
        return len;
    }

    bool hex4(const char* at, std::uint32_t& out) {
        if (end_ - at < 4) return false;
        out = 0;
        for (int k = 0; k < 4; ++k) {
            int h = hex_value(at[k]);
            if (h < 0) return false;
            out = out << 4 | static_cast<std::uint32_t>(h);
        }
        return true;
    }

    // Index of the first byte in the 8 at p that is '"', '\\', < 0x20 or
    // >= 0x80, or 8 if none. The lowest flagged bit of each test is exact
    // (borrows only run upwards), so the lowest of all is the first hit.
    static unsigned special_in_8(const char* p) {
        constexpr std::uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
        std::uint64_t v;
        std::memcpy(&v, p, 8);
        std::uint64_t q = v ^ (ones * '"');
        std::uint64_t b = v ^ (ones * '\\');
        std::uint64_t hit = ((q - ones) & ~q) | ((b - ones) & ~b) | ((v - ones * 0x20) & ~v) | v;
        hit &= highs;
        return hit ? static_cast<unsigned>(std::countr_zero(hit)) / 8 : 8;
    }

    // p_ at the opening quote. On success `out` views the decoded text (into
    // the input when there were no escapes, else into `buf`).
    bool read_string(std::string& buf, std::string_view& out) {
        const char* start = ++p_;
        bool decoded = false;
        for (;;) {
            // Skip the plain run: eight bytes at a time, then byte by byte.
            const char* run = p_;
#if defined(__SSE2__)
            {
                const __m128i quote = _mm_set1_epi8('"'), slash = _mm_set1_epi8('\\'),
                              space = _mm_set1_epi8(0x20);
                while (end_ - p_ >= 16) {
                    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p_));
                    // Signed < 0x20 also catches bytes >= 0x80 (UTF-8 to validate).
                    __m128i hit = _mm_or_si128(
                        _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, slash)),
                        _mm_cmplt_epi8(v, space));
                    int m = _mm_movemask_epi8(hit);
                    if (m) {
                        p_ += std::countr_zero(static_cast<unsigned>(m));
                        break;
                    }
                    p_ += 16;
                }
            }
#else
            if constexpr (std::endian::native == std::endian::little) {
                while (end_ - p_ >= 8) {
                    unsigned k = special_in_8(p_);
                    p_ += k;
                    if (k < 8) break;
                }
            }
#endif
            while (p_ < end_) {
                unsigned char d = static_cast<unsigned char>(*p_);
                if (d == '"' || d == '\\' || d < 0x20 || d >= 0x80) break;
                ++p_;
            }
            if (decoded) buf.append(run, static_cast<std::size_t>(p_ - run));
            if (p_ >= end_) return fail_at("unterminated string", start - 1);
            unsigned char c = static_cast<unsigned char>(*p_);
            if (c == '"') {
                out = decoded ? std::string_view(buf)
                              : std::string_view(start, static_cast<std::size_t>(p_ - start));
                ++p_;
                return true;
            }
            if (c >= 0x80) {
                std::size_t n = utf8_length(reinterpret_cast<const unsigned char*>(p_),
                                            reinterpret_cast<const unsigned char*>(end_));
                if (n == 0) return fail("invalid UTF-8 in string");
                if (decoded) buf.append(p_, n);
                p_ += n;
                continue;
            }
            if (c < 0x20) return fail("control character in string");
            // A backslash: from here on the string is decoded into buf.
            if (!decoded) {
                buf.assign(start, static_cast<std::size_t>(p_ - start));
                decoded = true;
            }
            if (!escape(buf)) return false;
        }
    }

    // p_ at a backslash.
    bool escape(std::string& buf) {
        const char* at = p_;
        if (end_ - p_ < 2) return fail_at("unterminated string", at);
        char e = p_[1];
        p_ += 2;
        switch (e) {
        case '"': buf.push_back('"'); return true;
        case '\\': buf.push_back('\\'); return true;
        case '/': buf.push_back('/'); return true;
        case 'b': buf.push_back('\b'); return true;
        case 'f': buf.push_back('\f'); return true;
        case 'n': buf.push_back('\n'); return true;
        case 'r': buf.push_back('\r'); return true;
        case 't': buf.push_back('\t'); return true;
        case 'u': break;
        default: return fail_at("invalid escape in string", at);
        }
        std::uint32_t cp;
        if (!hex4(p_, cp)) return fail_at("invalid \\u escape", at);
        p_ += 4;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return fail_at("lone surrogate in \\u escape", at);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            std::uint32_t lo;
            if (end_ - p_ < 6 || p_[0] != '\\' || p_[1] != 'u' || !hex4(p_ + 2, lo) ||
                lo < 0xDC00 || lo > 0xDFFF)
                return fail_at("lone surrogate in \\u escape", at);
            p_ += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        append_utf8(buf, cp);
        return true;
    }

    // --- numbers and literals ---------------------------------------------------

    static bool digit(char c) { return c >= '0' && c <= '9'; }

    bool read_number(sb_value& v) {
        const char* s = p_;
        bool neg = *p_ == '-';
        if (neg) ++p_;
        const char* digits = p_;
        if (p_ >= end_ || !digit(*p_)) return fail_at("invalid number", s);
        if (*p_ == '0') {
            ++p_;
            if (p_ < end_ && digit(*p_)) return fail_at("leading zero in number", s);
        } else {
            while (p_ < end_ && digit(*p_)) ++p_;
        }
        const char* int_end = p_;
        bool is_float = false;
        if (p_ < end_ && *p_ == '.') {
            ++p_;
            if (p_ >= end_ || !digit(*p_)) return fail_at("invalid number", s);
            while (p_ < end_ && digit(*p_)) ++p_;
            is_float = true;
        }
        if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
            ++p_;
            if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
            if (p_ >= end_ || !digit(*p_)) return fail_at("invalid number", s);
            while (p_ < end_ && digit(*p_)) ++p_;
            is_float = true;
        }
        if (!is_float) {
            std::size_t n = static_cast<std::size_t>(int_end - digits);
            if (n > 19) return fail_at("integer out of range (beyond int64)", s);
            std::uint64_t x = 0;
            for (const char* d = digits; d < int_end; ++d)
                x = x * 10 + static_cast<std::uint64_t>(*d - '0'); // 19 digits fit in uint64
            std::uint64_t limit = neg ? 9223372036854775808ull : 9223372036854775807ull;
            if (x > limit) return fail_at("integer out of range (beyond int64)", s);
            v.type = SB_VALUE_INT;
            v.i = neg ? static_cast<std::int64_t>(0 - x) : static_cast<std::int64_t>(x);
            return true;
        }
        double f = 0;
        auto r = std::from_chars(s, p_, f);
        if (r.ec == std::errc::result_out_of_range) {
            if (magnitude_exponent(digits, p_) > 0) return fail_at("number out of range", s);
            f = neg ? -0.0 : 0.0; // underflow
        } else if (r.ec != std::errc() || r.ptr != p_) {
            return fail_at("invalid number", s);
        }
        v.type = SB_VALUE_FLOAT;
        v.f = f;
        return true;
    }

    // Roughly the decimal exponent of a validated number literal (without its
    // sign): > 0 means huge, <= 0 tiny. Used only to tell overflow from
    // underflow.
    static long magnitude_exponent(const char* s, const char* end) {
        long pos = 0; // position of the first significant digit
        bool seen = false, after_dot = false;
        long int_digits = 0, lead_zeros = 0;
        const char* p = s;
        for (; p < end && *p != 'e' && *p != 'E'; ++p) {
            if (*p == '.') {
                after_dot = true;
                continue;
            }
            if (!after_dot) ++int_digits;
            if (!seen && *p == '0') {
                if (after_dot) ++lead_zeros;
                continue;
            }
            seen = true;
        }
        pos = int_digits > 0 && s[0] != '0' ? int_digits : -lead_zeros;
        long e = 0;
        if (p < end) {
            ++p;
            bool eneg = *p == '-';
            if (*p == '+' || *p == '-') ++p;
            for (; p < end; ++p) e = e < 100'000'000 ? e * 10 + (*p - '0') : e;
            if (eneg) e = -e;
        }
        return pos + e;
    }

    bool literal(const char* word, std::size_t n, sb_value& v, sb_value_type type,
                 std::int64_t i) {
        if (static_cast<std::size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0)
            return fail("expected a value");
        p_ += n;
        v.type = type;
        v.i = i;
        return true;
    }

    bool read_scalar(sb_value& v) {
        v = sb_value{};
        char c = *p_;
        if (c == '"') {
            std::string_view s;
            if (!read_string(scratch_, s)) return false;
            v.type = SB_VALUE_STRING;
            v.str = s.data();
            v.len = s.size();
            return true;
        }
        if (c == '-' || digit(c)) return read_number(v);
        if (c == 't') return literal("true", 4, v, SB_VALUE_BOOL, 1);
        if (c == 'f') return literal("false", 5, v, SB_VALUE_BOOL, 0);
        if (c == 'n') return literal("null", 4, v, SB_VALUE_NULL, 0);
        return fail("expected a value");
    }

    // --- duplicate keys --------------------------------------------------------------

    Frame open_frame() { return Frame{keys_.size(), key_arena_.size()}; }
    void close_frame(const Frame& f) {
        keys_.resize(f.keys_begin);
        key_arena_.resize(f.arena_begin);
        if (f.table != SIZE_MAX) tables_used_ = f.table;
    }

    static std::uint64_t fingerprint(std::string_view k) {
        std::uint64_t a = 0, b = 0;
        if (k.size() >= 8) { // fixed-size loads: no library memcpy call
            std::memcpy(&a, k.data(), 8);
            std::memcpy(&b, k.data() + k.size() - 8, 8);
        } else {
            for (char c : k) a = a << 8 | static_cast<unsigned char>(c);
        }
        return (a * 0x9E3779B97F4A7C15ull) ^ b ^ (static_cast<std::uint64_t>(k.size()) << 56);
    }
    static std::uint64_t full_hash(std::string_view k) {
        std::uint64_t h = 0xcbf29ce484222325ull; // FNV-1a over the whole key
        for (char c : k) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
        return h ^ (h >> 29);
    }
    std::string_view stored(const KeyRef& r) const {
        return std::string_view(r.ptr ? r.ptr : key_arena_.data() + r.off, r.len);
    }
    bool in_document(const char* p) const {
        return points_into(std::string_view(begin_, static_cast<std::size_t>(end_ - begin_)), p);
    }

    void table_insert(std::vector<std::uint32_t>& t, std::uint32_t index) {
        std::size_t mask = t.size() - 1;
        std::size_t h = static_cast<std::size_t>(full_hash(stored(keys_[index])));
        while (t[h & mask] != 0) ++h;
        t[h & mask] = index + 1;
    }

    // Records `key` for the frame; false if the object already has it.
    bool remember_key(Frame& f, std::string_view key) {
        std::uint64_t fp = fingerprint(key);
        std::size_t count = keys_.size() - f.keys_begin;
        if (f.table == SIZE_MAX) {
            for (std::size_t k = f.keys_begin; k < keys_.size(); ++k)
                if (keys_[k].fp == fp && stored(keys_[k]) == key) return false;
        } else {
            auto& t = tables_[f.table];
            std::size_t mask = t.size() - 1;
            for (std::size_t h = static_cast<std::size_t>(full_hash(key));; ++h) {
                std::uint32_t e = t[h & mask];
                if (e == 0) break;
                if (stored(keys_[e - 1]) == key) return false;
            }
        }
        // Keys read straight from the document stay valid for the whole parse;
        // decoded or mapped ones are copied.
        if (!key.empty() && in_document(key.data())) {
            keys_.push_back({key.data(), 0, static_cast<std::uint32_t>(key.size()), fp});
        } else {
            keys_.push_back({nullptr, static_cast<std::uint32_t>(key_arena_.size()),
                             static_cast<std::uint32_t>(key.size()), fp});
            key_arena_.append(key);
        }
        ++count;
        if (count == kLinearKeys + 1 || (f.table != SIZE_MAX &&
                                         count * 2 > tables_[f.table].size())) {
            // (Re)build the table at twice the keys, rounded to a power of two.
            if (f.table == SIZE_MAX) {
                f.table = tables_used_++;
                if (tables_.size() < tables_used_) tables_.emplace_back();
            }
            auto& t = tables_[f.table];
            t.assign(std::bit_ceil(count * 4), 0);
            for (std::size_t k = f.keys_begin; k < keys_.size(); ++k)
                table_insert(t, static_cast<std::uint32_t>(k));
        } else if (f.table != SIZE_MAX) {
            table_insert(tables_[f.table], static_cast<std::uint32_t>(keys_.size() - 1));
        }
        return true;
    }

    // --- the leaf walk --------------------------------------------------------------

    static bool key_char(char c) {
        static constexpr auto table = [] {
            std::array<bool, 256> t{};
            for (int b = 0; b < 256; ++b)
                t[static_cast<std::size_t>(b)] = (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
                                                 (b >= '0' && b <= '9') || b == '_' || b == '-';
            return t;
        }();
        return table[static_cast<unsigned char>(c)];
    }

    bool path_append(const char* s, std::size_t n) {
        if (plen_ + n > kMaxPathLength) return false;
        std::memcpy(path_ + plen_, s, n);
        plen_ += n;
        return true;
    }
    std::string_view path_view() {
        path_[plen_] = '\0';
        return std::string_view(path_, plen_);
    }

    // p_ at '"' of a member key in path mode: appends the (mapped) key to
    // the path and checks it against the frame's earlier keys.
    bool path_key(Frame& f) {
        const char* at = p_;
        std::string_view key;
        // Fast path: a plain key of key characters, no escapes.
        const char* q = p_ + 1;
        while (q < end_ && key_char(*q)) ++q;
        if (q < end_ && *q == '"' && q != p_ + 1) {
            key = std::string_view(p_ + 1, static_cast<std::size_t>(q - p_ - 1));
            p_ = q + 1;
        } else {
            if (!read_string(keybuf_, key)) return false;
            if (!is_json_path_key(key)) {
                if (keys_policy_ == JsonKeys::reject)
                    return fail_at("key is not [A-Za-z0-9_-]+", at);
                keymap_ = sanitize_json_key(key);
                key = keymap_;
            }
        }
        if ((plen_ != 0 && !path_append(".", 1)) || !path_append(key.data(), key.size()))
            return fail_at("field path longer than 512 bytes", at);
        if (!remember_key(f, key)) return fail_at("duplicate key in object", at);
        return true;
    }

    template <class Leaf>
    bool walk_value(std::size_t segs, Leaf& leaf) {
        if (p_ >= end_) return fail("unexpected end of input");
        char c = *p_;
        if (c == '{') return walk_object(segs, leaf);
        if (c == '[') return walk_array(segs, leaf);
        value_at_ = p_;
        sb_value v;
        if (!read_scalar(v)) return false;
        if (!leaf(path_view(), v)) return fail_at("field refused", value_at_);
        return true;
    }

    // p_ at '{'; `segs` is the number of segments of path_.
    template <class Leaf>
    bool walk_object(std::size_t segs, Leaf& leaf) {
        if (segs + 1 > kMaxPathDepth) return fail("nesting deeper than 32 levels");
        ++p_;
        ws();
        const std::size_t base = plen_;
        if (peek('}')) {
            ++p_;
            return true;
        }
        Frame f = open_frame();
        for (;;) {
            if (!peek('"')) return fail("expected a string key");
            if (!path_key(f)) return false;
            ws();
            if (!peek(':')) return fail("expected ':'");
            ++p_;
            ws();
            if (!walk_value(segs + 1, leaf)) return false;
            plen_ = base;
            ws();
            if (peek(',')) {
                ++p_;
                ws();
                if (peek('}')) return fail("trailing comma");
                continue;
            }
            if (peek('}')) {
                ++p_;
                close_frame(f);
                return true;
            }
            return fail(p_ >= end_ ? "unexpected end of input" : "expected ',' or '}'");
        }
    }

    template <class Leaf>
    bool walk_array(std::size_t segs, Leaf& leaf) {
        if (segs + 1 > kMaxPathDepth) return fail("nesting deeper than 32 levels");
        ++p_;
        ws();
        const std::size_t base = plen_;
        if (peek(']')) {
            ++p_;
            return true;
        }
        for (std::int64_t index = 0;; ++index) {
            if (index > kMaxArrayIndex) return fail("array index above 65535");
            char buf[10];
            buf[0] = '[';
            auto r = std::to_chars(buf + 1, buf + sizeof buf - 1, index);
            *r.ptr = ']';
            if (!path_append(buf, static_cast<std::size_t>(r.ptr + 1 - buf)))
                return fail("field path longer than 512 bytes");
            if (!walk_value(segs + 1, leaf)) return false;
            plen_ = base;
            ws();
            if (peek(',')) {
                ++p_;
                ws();
                if (peek(']')) return fail("trailing comma");
                continue;
            }
            if (peek(']')) {
                ++p_;
                return true;
            }
            return fail(p_ >= end_ ? "unexpected end of input" : "expected ',' or ']'");
        }
    }

    // --- record format ---------------------------------------------------------------

    // Iterates the members of an object whose keys are not paths. First call
    // with p_ just after '{'. Returns true with done set after '}', or with
    // `key` (valid until the next call) and p_ at the value.
    bool next_raw_key(Frame& f, bool& done, std::string_view& key, const char*& key_at) {
        done = false;
        ws();
        bool first = keys_.size() == f.keys_begin;
        if (!first) {
            if (peek('}')) {
                ++p_;
                done = true;
                return true;
            }
            if (!peek(',')) return fail(p_ >= end_ ? "unexpected end of input"
                                                   : "expected ',' or '}'");
            ++p_;
            ws();
            if (peek('}')) return fail("trailing comma");
        } else if (peek('}')) {
            ++p_;
            done = true;
            return true;
        }
        if (!peek('"')) return fail("expected a string key");
        key_at = p_;
        if (!read_string(keybuf_, key)) return false;
        if (!remember_key(f, key)) return fail_at("duplicate key in object", key_at);
        ws();
        if (!peek(':')) return fail("expected ':'");
        ++p_;
        ws();
        if (p_ >= end_) return fail("unexpected end of input");
        return true;
    }

    // Reads a string value that must hold no NUL into `out` (NUL terminated).
    bool c_string_value(std::string& out, const char* what) {
        if (!peek('"')) return fail(what);
        std::string_view s;
        if (!read_string(scratch_, s)) return false;
        if (s.find('\0') != std::string_view::npos) return fail("NUL character in a meta value");
        out.assign(s);
        return true;
    }

    bool read_meta(bool envelope) {
        if (!peek('{')) return fail("meta must be an object");
        ++p_;
        Frame f = open_frame();
        bool done = false;
        std::string_view key;
        const char* key_at = nullptr;
        while (next_raw_key(f, done, key, key_at)) {
            if (done) {
                close_frame(f);
                return true;
            }
            bool known = key == SB_META_CHANNEL || key == SB_META_OCCURRED_AT ||
                         key == SB_META_EXTERNAL_ID || key == SB_META_SUBJECT_REF ||
                         (envelope && meta_index(key) >= 0);
            if (!known) return fail_at("unknown meta key", key_at);
            meta_key_.assign(key);
            const char* at = p_;
            if (!c_string_value(meta_value_, "meta values must be strings")) return false;
            // The journal dedupes on external_id: "" would make every later
            // record of the source a silent duplicate.
            if (meta_value_.empty() && meta_key_ == SB_META_EXTERNAL_ID)
                return fail_at("meta external_id is empty", at);
            if (out_->set_meta(meta_key_.c_str(), meta_value_.c_str()) != SB_OK)
                return fail_at(is_time_key(meta_key_) ? "meta time is not RFC 3339"
                                                      : "meta value refused",
                               at);
        }
        return false;
    }

    static bool is_time_key(std::string_view k) {
        return k == "occurred_at" || k == "received_at" || k == "expires_at";
    }

    bool read_envelope_id() {
        if (peek('n')) {
            sb_value v;
            return literal("null", 4, v, SB_VALUE_NULL, 0);
        }
        const char* at = p_;
        if (!c_string_value(meta_value_, "id must be a string or null")) return false;
        if (out_->set_meta("id", meta_value_.c_str()) != SB_OK)
            return fail_at("meta value refused", at);
        return true;
    }

    bool read_categories() {
        if (!peek('{')) return fail("categories must be an object");
        // The same bytes as last time mean the same map: skip re-parsing the
        // patterns (lines from one producer repeat their categories).
        const std::size_t n = doc_categories_text_.size();
        if (n != 0 && static_cast<std::size_t>(end_ - p_) >= n &&
            std::memcmp(p_, doc_categories_text_.data(), n) == 0) {
            p_ += n;
            have_doc_categories_ = true;
            return true;
        }
        doc_categories_text_.clear();
        doc_categories_.clear();
        const char* start = p_;
        ++p_;
        Frame f = open_frame();
        bool done = false;
        std::string_view key;
        const char* key_at = nullptr;
        while (next_raw_key(f, done, key, key_at)) {
            if (done) {
                close_frame(f);
                have_doc_categories_ = true;
                doc_categories_text_.assign(start, static_cast<std::size_t>(p_ - start));
                return true;
            }
            auto pattern = PathPattern::parse(key);
            if (!pattern) return fail_at("malformed category pattern", key_at);
            if (!peek('"')) return fail("category must be a string");
            const char* at = p_;
            std::string_view cat;
            if (!read_string(scratch_, cat)) return false;
            if (!is_category_name(cat)) return fail_at("category must be [a-z0-9_.]+", at);
            if (!doc_categories_.add(key, cat)) return fail_at("malformed category pattern", key_at);
        }
        return false;
    }

    bool read_fields() {
        if (!peek('{')) return fail("fields must be an object");
        plen_ = 0;
        if (have_doc_categories_) {
            // Categories came first: stream each leaf straight to the sink.
            auto leaf = [&](std::string_view path, const sb_value& v) {
                if (out_->set_field(path.data(), v, doc_categories_.category_for(path)) == SB_OK)
                    return true;
                return fail_at("field refused by the record", value_at_);
            };
            return walk_object(0, leaf);
        }
        // Categories may still follow: keep the leaves until the end.
        auto leaf = [&](std::string_view path, const sb_value& v) {
            Pending pf{};
            pf.path_off = static_cast<std::uint32_t>(pending_arena_.size());
            pf.path_len = static_cast<std::uint32_t>(path.size());
            pending_arena_.append(path.data(), path.size() + 1); // with its NUL
            pf.value = v;
            pf.str_in_arena = v.type == SB_VALUE_STRING && v.len && !in_document(v.str);
            if (pf.str_in_arena) {
                pf.str_off = static_cast<std::uint32_t>(pending_arena_.size());
                pending_arena_.append(v.str, v.len);
                pf.value.str = nullptr;
            }
            pf.at = static_cast<std::size_t>(value_at_ - begin_);
            pending_.push_back(pf);
            return true;
        };
        return walk_object(0, leaf);
    }

    bool read_attachments() {
        if (!peek('[')) return fail("attachments must be an array");
        ++p_;
        ws();
        if (peek(']')) {
            ++p_;
            return true;
        }
        for (;;) {
            if (!read_attachment()) return false;
            ws();
            if (peek(',')) {
                ++p_;
                ws();
                if (peek(']')) return fail("trailing comma");
                continue;
            }
            if (peek(']')) {
                ++p_;
                return true;
            }
            return fail(p_ >= end_ ? "unexpected end of input" : "expected ',' or ']'");
        }
    }

    bool read_attachment() {
        if (!peek('{')) return fail("attachment must be an object");
        const char* obj_at = p_;
        ++p_;
        static constexpr const char* kKeys[] = {"name", "uri", "media_type", "sha256",
                                                "category"};
        bool has[5] = {false, false, false, false, false};
        std::int64_t size = -1;
        Frame f = open_frame();
        bool done = false;
        std::string_view key;
        const char* key_at = nullptr;
        while (next_raw_key(f, done, key, key_at)) {
            if (done) break;
            if (key == "size") {
                const char* at = p_;
                sb_value v;
                if (peek('n')) {
                    if (!literal("null", 4, v, SB_VALUE_NULL, 0)) return false;
                    continue;
                }
                if (!(peek('-') || (p_ < end_ && digit(*p_))) || !read_number(v) ||
                    v.type != SB_VALUE_INT || v.i < -1)
                    return fail_at("attachment size must be an integer >= -1", at);
                size = v.i;
                continue;
            }
            int k = 0;
            while (k < 5 && key != kKeys[k]) ++k;
            if (k == 5) return fail_at("unknown attachment key", key_at);
            if (peek('n')) { // null: absent
                sb_value v;
                if (!literal("null", 4, v, SB_VALUE_NULL, 0)) return false;
                continue;
            }
            const char* at = p_;
            if (!c_string_value(att_[k], "attachment values must be strings")) return false;
            if (k == 3 && !is_sha256(att_[k]))
                return fail_at("attachment sha256 must be 64 lowercase hex digits", at);
            if (k == 4 && !is_category_name(att_[k]))
                return fail_at("category must be [a-z0-9_.]+", at);
            has[k] = true;
        }
        if (err_) return false;
        close_frame(f);
        if (!has[1] || att_[1].empty()) return fail_at("attachment has no uri", obj_at);
        sb_attachment a{};
        a.struct_size = sizeof a;
        a.name = has[0] ? att_[0].c_str() : nullptr;
        a.uri = att_[1].c_str();
        a.media_type = has[2] ? att_[2].c_str() : nullptr;
        a.size = size;
        a.sha256 = has[3] ? att_[3].c_str() : nullptr;
        a.category = has[4] ? att_[4].c_str() : nullptr;
        if (out_->add_attachment(a) != SB_OK) return fail_at("attachment refused", obj_at);
        return true;
    }

    static bool is_sha256(std::string_view s) {
        if (s.size() != 64) return false;
        for (char c : s)
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
        return true;
    }

    // Flat mode: a leaf that also provides a meta value.
    bool meta_from_leaf(RecordSink& out, const char* key, const sb_value& v) {
        if (v.type == SB_VALUE_STRING) {
            meta_value_.assign(v.str, v.len);
            if (meta_value_.empty() || meta_value_.find('\0') != std::string::npos) return false;
        } else if (v.type == SB_VALUE_INT) {
            meta_value_.clear();
            append_json_int(meta_value_, v.i);
        } else {
            return false;
        }
        return out.set_meta(key, meta_value_.c_str()) == SB_OK;
    }
};

// ---------------------------------------------------------------------------
// Convenience wrappers (a fresh reader each call; keep a JsonRecordReader to
// reuse its buffers on a hot path).

// Leaves of one JSON object; see JsonRecordReader::parse.
template <class Leaf>
bool json_leaves(std::string_view text, Leaf&& leaf, JsonError& error,
                 const JsonOptions& options = {}) {
    JsonRecordReader r;
    bool ok = r.parse(text, leaf, options);
    error = r.error();
    return ok;
}

// Core side: a record-format document into `record`.
inline bool read_record_json(std::string_view text, sb_record& record, JsonError& error,
                             const RecordReadOptions& options = {}) {
    JsonRecordReader r;
    DataRecordSink sink(record, options.envelope);
    bool ok = r.read_record(text, sink, options);
    error = r.error();
    return ok;
}

// Core side: a flat document into `record`.
inline bool read_flat_json(std::string_view text, sb_record& record, JsonError& error,
                           const FlatReadOptions& options = {}) {
    JsonRecordReader r;
    DataRecordSink sink(record);
    bool ok = r.read_flat(text, sink, options);
    error = r.error();
    return ok;
}

// Used by the jsonl-source plugin (and bench/micro/record_stages.cpp, which
// times what it does).
// Takes a flat line's fields as the reader finds them (document order) and
// sets them on the record in path order, in which the host stores each one
// without searching or moving the others. The order, and the categories,
// depend only on the line's shape (its paths in document order), which is
// the same for most lines of an export: both are kept per shape, and a host
// of ABI 1.2 or later is given the shape once (shape_new) and then each
// record's values in one call (record_set_shape).
class SortingSink final : public RecordSink {
public:
    SortingSink(const sb_host_api* api, const CategoryMap* categories)
        : api_(api), categories_(categories),
          host_shapes_(api && SB_HAS_FIELD(api, sb_host_api, record_set_shape) && api->shape_new &&
                       api->shape_free && api->record_set_shape) {}
    SortingSink(const SortingSink&) = delete;
    SortingSink& operator=(const SortingSink&) = delete;
    ~SortingSink() override { forget_shapes(); }

    // `document`: the text being read, if it stays valid until finish():
    // string values that are views of it (those without escapes) are then
    // not copied.
    void begin(sb_record* record, std::string_view document = {}) {
        record_ = record;
        document_ = document;
        fields_.clear();
        paths_.clear();
        values_.clear();
    }

    sb_status set_meta(const char* key, const char* value) override {
        return api_->record_set_meta(record_, key, value);
    }
    sb_status set_field(const char* path, const sb_value& value, const char* category) override {
        return set_field(path, std::strlen(path), value, category);
    }
    sb_status set_field(const char* path, std::size_t path_len, const sb_value& value,
                        const char*) override {
        // Each member stored once, in place, from the member it comes from:
        // a Field built whole on the stack and then copied is read back in
        // wider loads than the stores that made it, and each such load
        // waits for those stores to reach the cache. (So does a copy of
        // `value` whole, which its reader has just set member by member.)
        Field& f = fields_.emplace_back();
        f.path = static_cast<std::uint32_t>(paths_.size());
        f.type = value.type;
        switch (value.type) {
        case SB_VALUE_STRING:
            f.len = value.len;
            if (value.str && points_into(document_, value.str)) {
                f.doc = value.str;
            } else { // in the reader's buffer, which is reused: copied
                f.str = static_cast<std::uint32_t>(values_.size());
                values_.append(value.str ? value.str : "", value.len);
            }
            break;
        case SB_VALUE_FLOAT: f.f = value.f; break;
        default: f.i = value.i; break;
        }
        paths_.append(path, path_len + 1); // with its NUL
        return SB_OK;
    }
    sb_status add_attachment(const sb_attachment& a) override {
        return api_->record_add_attachment(record_, &a);
    }

    // Sets the fields taken since begin(). Not SB_OK: the record refused one
    // (it cannot, for what the reader accepts); the caller reads the line
    // again the plain way for the reader's own error.
    sb_status finish() {
        const Shape& shape = shape_of();
        if (shape.host) {
            values_out_.resize(fields_.size());
            for (std::size_t k = 0; k < fields_.size(); ++k) fill(values_out_[k], fields_[k]);
            return api_->record_set_shape(record_, shape.host, values_out_.data());
        }
        for (std::uint32_t k : shape.order) {
            const Field& f = fields_[k];
            sb_value v;
            fill(v, f);
            sb_status st = api_->record_set(record_, paths_.data() + f.path, &v, shape.categories[k]);
            if (st != SB_OK) return st;
        }
        return SB_OK;
    }

private:
    struct Field {
        std::uint32_t path; // offset in paths_ (NUL-terminated)
        sb_value_type type;
        std::uint32_t str;  // STRING: offset in values_, unless doc
        const char* doc;    // STRING: in the document
        std::size_t len;    // STRING: length
        std::int64_t i;     // INT, BOOL
        double f;           // FLOAT
    };

    // Sets every member of `v` from `f`, one store each, in place (see
    // set_field).
    void fill(sb_value& v, const Field& f) const {
        v.type = f.type;
        v.str = f.type != SB_VALUE_STRING ? nullptr : f.doc ? f.doc : values_.data() + f.str;
        v.len = f.len;
        v.i = f.i;
        v.f = f.f;
    }
    struct Shape {
        std::vector<std::uint32_t> order;     // field indexes in path order
        std::vector<const char*> categories;  // per field (document order)
        sb_shape* host = nullptr; // the host's, when it has shapes and took this one
    };
    static constexpr std::size_t kMaxShapes = 256;

    const Shape& shape_of() {
        if (last_ && last_->first == paths_) return last_->second;
        auto it = shapes_.find(paths_);
        if (it == shapes_.end()) {
            if (shapes_.size() >= kMaxShapes) forget_shapes(); // a source of ever new shapes
            it = shapes_.emplace(paths_, make_shape()).first;
        }
        last_ = &*it;
        return it->second;
    }

    void forget_shapes() {
        for (auto& [paths, shape] : shapes_)
            if (shape.host) api_->shape_free(shape.host);
        shapes_.clear();
        last_ = nullptr;
    }

    Shape make_shape() const {
        Shape s;
        std::vector<std::string> keys(fields_.size());
        std::vector<PathSegment> segs;
        s.categories.resize(fields_.size());
        for (std::size_t k = 0; k < fields_.size(); ++k) {
            std::string_view path(paths_.data() + fields_[k].path);
            if (parse_path(path, segs)) append_sort_key(keys[k], segs);
            s.categories[k] = categories_ ? categories_->category_for(path) : "unknown";
        }
        s.order.resize(fields_.size());
        for (std::uint32_t k = 0; k < s.order.size(); ++k) s.order[k] = k;
        std::stable_sort(s.order.begin(), s.order.end(),
                         [&](std::uint32_t a, std::uint32_t b) { return keys[a] < keys[b]; });
        if (host_shapes_) { // null (a path repeated, say): set one by one, as before
            std::vector<const char*> paths(fields_.size());
            for (std::size_t k = 0; k < fields_.size(); ++k) paths[k] = paths_.data() + fields_[k].path;
            s.host = api_->shape_new(paths.data(), s.categories.data(), paths.size());
        }
        return s;
    }

    const sb_host_api* api_;
    const CategoryMap* categories_;
    const bool host_shapes_;
    sb_record* record_ = nullptr;
    std::string_view document_;
    std::vector<Field> fields_;
    std::vector<sb_value> values_out_; // finish(): the values in document order
    std::string paths_;  // this line's paths, NUL-separated: its shape
    std::string values_; // its string values
    std::unordered_map<std::string, Shape> shapes_;
    const std::pair<const std::string, Shape>* last_ = nullptr;
};

} // namespace sb::detail
