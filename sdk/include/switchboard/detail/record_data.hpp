// Switchboard SDK: the in-memory record behind the opaque sb_record handle.
//
// Header-only and shared by the core and the test harness (testing.hpp), so
// that a plugin tested with the harness sees exactly the record semantics of
// the daemon: path syntax, conflicts, ordering and JSON form. This is not part
// of the ABI: plugins only ever see sb_record through the host API table.
#pragma once

#include <switchboard/detail/abi.hpp>
#include <switchboard/plugin.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace sb::detail {

constexpr std::size_t kMaxPathLength = 512;
constexpr std::size_t kMaxPathDepth = 32;
constexpr std::int64_t kMaxArrayIndex = 65535;

// One segment of a field path: a key ("citizen") or an array index ("[2]").
struct PathSegment {
    std::string_view key;   // empty for an index
    std::int64_t index = -1; // >= 0 for an index

    bool is_index() const { return index >= 0; }
};

inline bool is_key_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

// Parses "a.b[2].c" into segments. The first segment is a key; keys are
// [A-Za-z0-9_-]+; indexes are decimal. Returns false on any other shape.
inline bool parse_path(std::string_view path, std::vector<PathSegment>& out) {
    out.clear();
    if (path.empty() || path.size() > kMaxPathLength) return false;
    std::size_t i = 0;
    bool expect_key = true;
    while (i < path.size()) {
        if (expect_key) {
            std::size_t start = i;
            while (i < path.size() && is_key_char(path[i])) ++i;
            if (i == start) return false;
            out.push_back({path.substr(start, i - start), -1});
            expect_key = false;
        } else if (path[i] == '.') {
            ++i;
            expect_key = true;
        } else if (path[i] == '[') {
            ++i;
            std::size_t start = i;
            while (i < path.size() && path[i] >= '0' && path[i] <= '9') ++i;
            if (i == start || i >= path.size() || path[i] != ']' || i - start > 7) return false;
            std::int64_t index = 0;
            std::from_chars(path.data() + start, path.data() + i, index);
            if (index > kMaxArrayIndex) return false;
            ++i;
            out.push_back({{}, index});
        } else {
            return false;
        }
        if (out.size() > kMaxPathDepth) return false;
    }
    return !expect_key;
}

// A byte string whose order is path order and in which an ancestor's key is a
// prefix of its descendants' keys: a key segment is 0x02 + bytes + 0x00, an
// index is 0x01 + 4 bytes big-endian.
inline void append_sort_key(std::string& out, const std::vector<PathSegment>& segs) {
    for (const auto& seg : segs) {
        if (seg.is_index()) {
            auto v = static_cast<std::uint32_t>(seg.index);
            char b[5] = {'\x01', static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                         static_cast<char>(v >> 8), static_cast<char>(v)};
            out.append(b, 5);
        } else {
            out.push_back('\x02');
            out.append(seg.key);
            out.push_back('\0');
        }
    }
}

// A prefix of the n bytes at `p` that needs no escaping in a JSON string
// (printable ASCII but '"' and '\\'). With SSE2 (every x86-64), sixteen
// bytes at a time, and it ends exactly at the first byte under 0x20, over
// 0x7f, '"' or '\\' met there; after that, or without SSE2, in whole words
// of eight bytes: it ends at the first word holding such a byte (the classic
// tests for "a byte less than k" on x and "a zero byte" on x ^ c; their
// false alarms only end it early). The caller goes on byte by byte.
inline std::size_t plain_json_bytes(const char* p, std::size_t n) {
    std::size_t i = 0;
#if defined(__SSE2__)
    {
        const __m128i below = _mm_set1_epi8(0x20), quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
        for (; i + 16 <= n; i += 16) {
            const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
            // A signed compare: bytes 0x80-0xff are negative, so under 0x20 too.
            const __m128i special = _mm_or_si128(_mm_cmplt_epi8(x, below),
                                                 _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)));
            if (const int m = _mm_movemask_epi8(special)) return i + static_cast<std::size_t>(__builtin_ctz(m));
        }
    }
#endif
    constexpr std::uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    auto has_zero = [](std::uint64_t v) { return (v - ones) & ~v & highs; };
    for (; i + 8 <= n; i += 8) {
        std::uint64_t x;
        std::memcpy(&x, p + i, 8);
        std::uint64_t special = (x & highs) | ((x - ones * 0x20) & ~x & highs) | has_zero(x ^ (ones * '"')) |
                                has_zero(x ^ (ones * '\\'));
        if (special) break;
    }
    return i;
}

// Appends `s` to `out` as a JSON string literal. Invalid UTF-8 bytes become
// U+FFFD so that the output is always valid JSON.
inline void append_json_string(std::string& out, std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    out.push_back('"');
    std::size_t i = 0;
    while (i < s.size()) {
        // Most of a value needs no escaping: append it a run at a time,
        // found eight bytes at a time (plain_json_bytes).
        std::size_t run = i + plain_json_bytes(s.data() + i, s.size() - i);
        while (run < s.size()) {
            unsigned char r = static_cast<unsigned char>(s[run]);
            if (r < 0x20 || r >= 0x80 || r == '"' || r == '\\') break;
            ++run;
        }
        if (run > i) {
            out.append(s.data() + i, run - i);
            i = run;
            if (i == s.size()) break;
        }
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    out += "\\u00";
                    out.push_back(hex[c >> 4]);
                    out.push_back(hex[c & 15]);
                } else {
                    out.push_back(static_cast<char>(c));
                }
            }
            ++i;
            continue;
        }
        // Multi-byte sequence: validate length, continuation bytes, overlong
        // forms and surrogates.
        std::size_t len = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3
                                                      : (c >= 0xF0 && c <= 0xF4) ? 4
                                                                                 : 0;
        bool ok = len != 0 && i + len <= s.size();
        for (std::size_t k = 1; ok && k < len; ++k)
            ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
        if (ok && len >= 3) {
            unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
            if (c == 0xE0 && c1 < 0xA0) ok = false;
            if (c == 0xED && c1 > 0x9F) ok = false;
            if (c == 0xF0 && c1 < 0x90) ok = false;
            if (c == 0xF4 && c1 > 0x8F) ok = false;
        }
        if (ok) {
            out.append(s.data() + i, len);
            i += len;
        } else {
            out += "\xEF\xBF\xBD";
            ++i;
        }
    }
    out.push_back('"');
}

// Appends `"key":` for a key that needs no escaping: a path segment's key
// ([A-Za-z0-9_-], parse_path) or an envelope key.
inline void append_json_key(std::string& out, std::string_view key) {
    out.push_back('"');
    out.append(key);
    out.append("\":", 2);
}

inline void append_json_double(std::string& out, double f) {
    if (!std::isfinite(f)) {
        out += "null";
        return;
    }
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, f);
    std::string_view text(buf, static_cast<std::size_t>(r.ptr - buf));
    out += text;
    // Keep it a float on the way back in.
    if (text.find_first_of(".eE") == std::string_view::npos) out += ".0";
}

inline void append_json_int(std::string& out, std::int64_t i) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, i);
    out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

// The canonical spelling of a parsed path: "a.b[2].c" (no leading zeros).
inline std::string canonical_path(const std::vector<PathSegment>& segs) {
    std::string s;
    for (const auto& seg : segs) {
        if (seg.is_index()) {
            s.push_back('[');
            append_json_int(s, seg.index);
            s.push_back(']');
        } else {
            if (!s.empty()) s.push_back('.');
            s.append(seg.key);
        }
    }
    return s;
}

// Interned atoms ------------------------------------------------------------
//
// A leaf's path and category repeat across millions of records; only values
// differ. So a leaf does not hold them as strings but points to immutable
// atoms: a path atom carries the canonical path, its sort key and its parsed
// segments (nothing re-parses it), a category atom its name.
//
// Atoms are interned in one process-wide table and never freed, so a leaf
// copies a raw pointer and `sb_field.path`/`category` stay valid. The table is
// bounded (InternLimits), whatever sources send: when it is full, an atom is
// not interned but owned by the record that needed it (RecordData keeps it
// with its leaves), and a record copying such a leaf makes its own copy.
// Lookups go through a small per-thread cache (a fixed number of slots, each
// holding an interned atom), so the table's lock is only taken on a miss, and
// then shared unless the atom is new.

struct PathAtom {
    static constexpr std::size_t kCacheSlots = 4096; // per thread (32 KiB)

    std::string path;                  // canonical dotted path
    std::string key;                   // sort key (append_sort_key): byte order is path order
    std::vector<PathSegment> segments; // views into `path`
    bool interned = false;             // in the table (immortal); else owned by one record

    PathAtom() = default;
    PathAtom(const PathAtom&) = delete; // the segments point into `path`
    PathAtom& operator=(const PathAtom&) = delete;

    // The atom of `text`, a path in any valid spelling; null if it is not one.
    static std::unique_ptr<PathAtom> make(std::string_view text) {
        std::vector<PathSegment> segs;
        if (!parse_path(text, segs)) return nullptr;
        auto atom = std::make_unique<PathAtom>();
        atom->path = canonical_path(segs);
        parse_path(atom->path, atom->segments);
        atom->segments.shrink_to_fit();
        append_sort_key(atom->key, atom->segments);
        return atom;
    }
    std::string_view text() const { return path; }
    // Bytes it takes, for the table's bound.
    std::size_t footprint() const {
        return sizeof *this + path.capacity() + key.capacity() + segments.capacity() * sizeof(PathSegment);
    }
};

struct CategoryAtom {
    static constexpr std::size_t kCacheSlots = 256; // per thread

    std::string name;
    bool interned = false;

    static std::unique_ptr<CategoryAtom> make(std::string_view text) {
        auto atom = std::make_unique<CategoryAtom>();
        atom->name = std::string(text);
        return atom;
    }
    std::string_view text() const { return name; }
    std::size_t footprint() const { return sizeof *this + name.capacity(); }
};

// The bounds of the intern table: atoms, and bytes they take (with the
// table's own entries), per kind.
struct InternLimits {
    std::size_t paths = 65536;
    std::size_t path_bytes = std::size_t{16} << 20;
    std::size_t categories = 4096;
    std::size_t category_bytes = std::size_t{1} << 20;
};

struct InternStats {
    std::size_t paths = 0, path_bytes = 0, categories = 0, category_bytes = 0;
};

class InternTable {
public:
    // Never destroyed: atoms outlive every record, even at exit.
    static InternTable& instance() {
        static InternTable* table = new InternTable;
        return *table;
    }

    // The interned atom spelled `text`, or null.
    template <class Atom>
    const Atom* find(std::string_view text) {
        std::shared_lock<std::shared_mutex> lock(mu_);
        auto& pool = pool_of(static_cast<const Atom*>(nullptr));
        auto it = pool.atoms.find(text);
        return it == pool.atoms.end() ? nullptr : it->second;
    }

    // Interns `atom` (taking it) and returns it, or the atom already interned
    // under its text; null, leaving `atom` to the caller, when the table is
    // full.
    template <class Atom>
    const Atom* add(std::unique_ptr<Atom>& atom) {
        std::lock_guard<std::shared_mutex> lock(mu_);
        auto& pool = pool_of(static_cast<const Atom*>(nullptr));
        if (auto it = pool.atoms.find(atom->text()); it != pool.atoms.end()) return it->second;
        const std::size_t size = atom->footprint() + kEntryBytes;
        if (pool.atoms.size() >= pool.max_atoms || size > pool.max_bytes - std::min(pool.bytes, pool.max_bytes))
            return nullptr;
        atom->interned = true;
        const Atom* a = atom.release();
        pool.atoms.emplace(a->text(), a);
        pool.bytes += size;
        return a;
    }

    void set_limits(const InternLimits& l) {
        std::lock_guard<std::shared_mutex> lock(mu_);
        paths_.max_atoms = l.paths;
        paths_.max_bytes = l.path_bytes;
        categories_.max_atoms = l.categories;
        categories_.max_bytes = l.category_bytes;
    }

    InternStats stats() {
        std::shared_lock<std::shared_mutex> lock(mu_);
        return {paths_.atoms.size(), paths_.bytes, categories_.atoms.size(), categories_.bytes};
    }

private:
    static constexpr std::size_t kEntryBytes = 64; // a hash table node, roughly

    template <class Atom>
    struct Pool {
        std::unordered_map<std::string_view, const Atom*> atoms; // keys view the atoms' text
        std::size_t bytes = 0;
        std::size_t max_atoms = 0, max_bytes = 0;
    };

    // "unknown", the category of leaves set without one, is always there.
    InternTable() {
        set_limits(InternLimits{});
        CategoryAtom* unknown = CategoryAtom::make("unknown").release();
        unknown->interned = true;
        categories_.bytes = unknown->footprint() + kEntryBytes;
        categories_.atoms.emplace(unknown->text(), unknown);
    }
    Pool<PathAtom>& pool_of(const PathAtom*) { return paths_; }
    Pool<CategoryAtom>& pool_of(const CategoryAtom*) { return categories_; }

    std::shared_mutex mu_;
    Pool<PathAtom> paths_;
    Pool<CategoryAtom> categories_;
};

// This thread's cache: pairs of slots, each pair the last two interned atoms
// looked up whose text hashes to it, the most recent first.
template <class Atom>
const Atom** intern_cache_pair(std::string_view text) {
    static_assert(Atom::kCacheSlots >= 2 && (Atom::kCacheSlots & (Atom::kCacheSlots - 1)) == 0);
    static thread_local const Atom* slots[Atom::kCacheSlots];
    return &slots[std::hash<std::string_view>{}(text) & (Atom::kCacheSlots - 2)];
}

template <class Atom>
const Atom* remember(const Atom** pair, const Atom* atom) {
    pair[1] = pair[0];
    pair[0] = atom;
    return atom;
}

// The interned atom spelled exactly `text`, or null. Interns nothing.
template <class Atom>
const Atom* find_interned(std::string_view text) {
    const Atom** pair = intern_cache_pair<Atom>(text);
    if (pair[0] && pair[0]->text() == text) return pair[0];
    if (pair[1] && pair[1]->text() == text) return remember(pair, pair[1]);
    const Atom* atom = InternTable::instance().find<Atom>(text);
    return atom ? remember(pair, atom) : nullptr;
}

// The atom of `text` (a path: any valid spelling): the interned one, or, when
// the table is full, a new one left in `owned` for the caller to keep. Null
// when `text` is not valid.
template <class Atom>
const Atom* intern(std::string_view text, std::unique_ptr<Atom>& owned) {
    if (const Atom* atom = find_interned<Atom>(text)) return atom;
    std::unique_ptr<Atom> made = Atom::make(text);
    if (!made) return nullptr;
    if (const Atom* atom = InternTable::instance().add(made)) {
        // Cached under its canonical spelling only.
        return atom->text() == text ? remember(intern_cache_pair<Atom>(text), atom) : atom;
    }
    owned = std::move(made);
    return owned.get();
}

// For tests: smaller bounds, to fill the table quickly; InternLimits{} restores
// the defaults. Atoms already interned stay.
inline void set_intern_limits_for_testing(const InternLimits& limits) {
    InternTable::instance().set_limits(limits);
}
inline InternStats intern_stats() { return InternTable::instance().stats(); }

// What a default-constructed leaf points to (never in the table).
template <class Atom>
const Atom* empty_atom() {
    static const Atom* atom = [] {
        auto* a = new Atom;
        a->interned = true;
        return a;
    }();
    return atom;
}

// One leaf of the field tree. Its path and category are atoms: interned, or
// owned by the record holding the leaf (a leaf is only ever copied into
// another record through RecordData, which copies such atoms).
struct Leaf {
    sb_value_type type = SB_VALUE_NULL;
    std::string str;
    // i for SB_VALUE_INT and SB_VALUE_BOOL, f for SB_VALUE_FLOAT: one of
    // the two, so that a leaf is 64 bytes, a cache line (value_i() and
    // value_f() give 0 for the other types).
    union {
        std::int64_t i = 0;
        double f;
    };
    std::int64_t value_i() const { return type == SB_VALUE_INT || type == SB_VALUE_BOOL ? i : 0; }
    double value_f() const { return type == SB_VALUE_FLOAT ? f : 0; }

    const std::string& path() const { return path_->path; } // canonical dotted path
    const std::string& key() const { return path_->key; }   // sort key: byte order is path order
    const std::vector<PathSegment>& segments() const { return path_->segments; }
    const std::string& category() const { return category_->name; }
    const PathAtom* path_atom() const { return path_; }
    const CategoryAtom* category_atom() const { return category_; }

private:
    friend class RecordData;
    const PathAtom* path_ = empty_atom<PathAtom>();
    const CategoryAtom* category_ = empty_atom<CategoryAtom>();
};
static_assert(sizeof(void*) != 8 || sizeof(Leaf) <= 64, "a leaf fits a cache line on 64-bit hosts");

struct AttachmentData {
    std::string name, uri, media_type, sha256, category;
    std::int64_t size = -1;
};

// Envelope keys a record may carry, in the order they are written.
inline constexpr const char* kMetaKeys[] = {"id",          "source",      "channel",
                                            "occurred_at", "received_at", "expires_at",
                                            "category",    "external_id", "subject_ref"};

inline int meta_index(std::string_view key) {
    for (int i = 0; i < static_cast<int>(std::size(kMetaKeys)); ++i)
        if (key == kMetaKeys[i]) return i;
    return -1;
}

// Accepts RFC 3339 date-times: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM),
// with every part in range (leap years counted; second 60 allowed).
inline bool is_rfc3339(std::string_view s) {
    auto num = [&](std::size_t at, std::size_t n, int& out) {
        if (at + n > s.size()) return false;
        out = 0;
        for (std::size_t k = at; k < at + n; ++k) {
            if (s[k] < '0' || s[k] > '9') return false;
            out = out * 10 + (s[k] - '0');
        }
        return true;
    };
    int year, month, day, hour, minute, second;
    if (!(s.size() > 19 && num(0, 4, year) && s[4] == '-' && num(5, 2, month) && s[7] == '-' &&
          num(8, 2, day) && (s[10] == 'T' || s[10] == 't') && num(11, 2, hour) && s[13] == ':' &&
          num(14, 2, minute) && s[16] == ':' && num(17, 2, second)))
        return false;
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (month < 1 || month > 12 || day < 1 ||
        day > days[month - 1] + (month == 2 && leap ? 1 : 0) || hour > 23 || minute > 59 ||
        second > 60)
        return false;
    std::size_t i = 19;
    if (i < s.size() && s[i] == '.') {
        ++i;
        std::size_t start = i;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
        if (i == start) return false;
    }
    if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) return i + 1 == s.size();
    int oh, om;
    return i + 6 == s.size() && (s[i] == '+' || s[i] == '-') && num(i + 1, 2, oh) &&
           s[i + 3] == ':' && num(i + 4, 2, om) && oh <= 23 && om <= 59;
}

// This thread's slot for `key` in a memo of 2^Bits sets of four T's (one
// memo per T): the per-thread memos of what a record shape determines. The
// slot last given for `key` if it is still in its set, else the set's
// oldest, for the caller to refill: the caller checks that the slot holds
// what it wants, and refills it if not. Four to a set: with one (a
// direct-mapped memo), two of a few keys that fell in one slot took it in
// turn and were made again for every record (two of the bench's five
// profiles did, with a new copy shape each time, and so a new disclosure
// text for the audit trail).
template <class T, unsigned Bits>
T& thread_memo_slot(std::uint64_t key) {
    static_assert(Bits > 0 && Bits < 32);
    constexpr unsigned kWays = 4;
    struct Set {
        std::uint64_t keys[kWays] = {};
        bool used[kWays] = {};
        unsigned next = 0; // the next to replace: the oldest
        T values[kWays];
    };
    static thread_local Set memo[std::size_t{1} << Bits];
    Set& set = memo[(key * 0x9E3779B97F4A7C15u) >> (64 - Bits)];
    for (unsigned w = 0; w < kWays; ++w)
        if (set.used[w] && set.keys[w] == key) return set.values[w];
    const unsigned w = set.next;
    set.next = (w + 1) % kWays;
    set.keys[w] = key;
    set.used[w] = true;
    return set.values[w];
}

// A new shape id: unique for the life of the process, never 0.
inline std::uint64_t new_shape_id() {
    static std::atomic<std::uint64_t> last{0};
    return ++last;
}

// A record shape registered by a source (ABI 1.2, host->shape_new): the
// paths and categories of a record's fields, checked, interned and put in
// path order once, so that setting a record of that shape
// (RecordData::set_shape) neither parses, looks up nor orders anything.
struct ShapeData {
    struct Entry {
        const PathAtom* path;
        const CategoryAtom* category;
        std::uint32_t value; // index of its value: the order the paths were given in
    };
    std::vector<Entry> entries; // in path order
    // Unique for the life of the process (never reused, unlike an
    // address): a record set by this shape keeps it while its paths are
    // those of the shape, for what the host memoises per shape.
    std::uint64_t id = 0;
    // Atoms the intern table had no room for (a record adopts a copy).
    std::vector<std::unique_ptr<PathAtom>> owned_paths;
    std::vector<std::unique_ptr<CategoryAtom>> owned_categories;

    // Null when a path is NULL or malformed, or when two name the same
    // leaf or conflict (one inside the other, a container used both as
    // object and array): the caller sets such fields one by one, and
    // record_set says which.
    static std::unique_ptr<ShapeData> make(const char* const* paths, const char* const* categories,
                                           std::size_t n);
};

// Asks the CPU to fetch the cache line at `p` ahead of its first read.
// The empty asm statement keeps the loops that call this: GCC may delete a
// loop whose body is __builtin_prefetch alone, as a loop with no side effect
// (-ffinite-loops, on by default for C++), and it did so with the delivery
// workers' prefetches, which compiled to nothing before the asm was added.
inline void prefetch_line(const void* p) {
#if defined(__GNUC__)
    __builtin_prefetch(p);
    __asm__ volatile("" : : "r"(p));
#else
    (void)p;
#endif
}
// The same for every cache line of the `n` bytes at `p`.
inline void prefetch_bytes(const void* p, std::size_t n) {
    const char* c = static_cast<const char*>(p);
    for (std::size_t at = 0; at < n; at += 64) prefetch_line(c + at);
}

class RecordData {
public:
    RecordData() = default;
    RecordData(RecordData&&) noexcept = default;
    RecordData& operator=(RecordData&&) noexcept = default;
    // A copy owns copies of the atoms the original owns.
    RecordData(const RecordData& other) { *this = other; }
    RecordData& operator=(const RecordData& other) {
        if (this == &other) return *this;
        std::copy(std::begin(other.meta_), std::end(other.meta_), std::begin(meta_));
        has_meta_ = other.has_meta_;
        leaves_ = other.leaves_;
        order_ = other.order_;
        attachments_ = other.attachments_;
        json_ = other.json_;
        json_valid_ = other.json_valid_;
        shape_id_ = other.shape_id_;
        cards_redacted_ = other.cards_redacted_;
        cards_clean_ = other.cards_clean_;
        owned_paths_.clear();
        owned_categories_.clear();
        for (Leaf& leaf : leaves_) {
            leaf.path_ = adopt(leaf.path_);
            leaf.category_ = adopt(leaf.category_);
        }
        return *this;
    }

    // Envelope ------------------------------------------------------------
    sb_status set_meta(std::string_view key, std::string_view value) {
        int idx = meta_index(key);
        if (idx < 0) return SB_ERR_INVALID;
        if ((key == "occurred_at" || key == "received_at" || key == "expires_at") &&
            !is_rfc3339(value))
            return SB_ERR_INVALID;
        meta_[static_cast<std::size_t>(idx)].assign(value); // (a recycled record's buffer)
        has_meta_ |= 1u << idx;
        dirty();
        return SB_OK;
    }

    const char* meta(std::string_view key) const {
        int idx = meta_index(key);
        if (idx < 0 || !(has_meta_ & (1u << idx))) return nullptr;
        return meta_[static_cast<std::size_t>(idx)].c_str();
    }

    // Fields -------------------------------------------------------------
    //
    // Leaves are kept in path order. Sources set them in document order,
    // which is rarely path order, so an out-of-order set() does not shift the
    // vector: the leaf is appended and its place kept in order_, and the
    // vector is put in path order once, when it is next read.
    sb_status set(std::string_view path, const sb_value& value, const char* category) {
        std::unique_ptr<PathAtom> owned; // set when the table is full
        const PathAtom* atom = intern(path, owned);
        if (!atom) return SB_ERR_INVALID;
        if (!valid_value(value)) return SB_ERR_INVALID;
        Leaf* target = nullptr;
        if (leaves_.capacity() == 0) leaves_.reserve(32); // records have a few dozen leaves
        if (order_.empty() && (leaves_.empty() || before(leaves_.back().path_, atom))) {
            // In order (or the first): only the previous leaf can conflict.
            if (!leaves_.empty() && conflicts(leaves_.back().key(), atom->key)) return SB_ERR_INVALID;
            target = &leaves_.emplace_back();
        } else {
            if (order_.empty()) { // leave the sorted state: index the leaves
                order_.resize(leaves_.size());
                for (std::uint32_t k = 0; k < order_.size(); ++k) order_[k] = k;
            }
            auto pos = std::lower_bound(order_.begin(), order_.end(), atom,
                                        [&](std::uint32_t k, const PathAtom* a) {
                                            return before(leaves_[k].path_, a);
                                        });
            if (pos != order_.end() && !before(atom, leaves_[*pos].path_)) {
                target = &leaves_[*pos]; // the same path: it keeps its atom
                atom = target->path_;
            } else {
                if ((pos != order_.end() && conflicts(leaves_[*pos].key(), atom->key)) ||
                    (pos != order_.begin() && conflicts(leaves_[*(pos - 1)].key(), atom->key)))
                    return SB_ERR_INVALID;
                order_.insert(pos, static_cast<std::uint32_t>(leaves_.size()));
                target = &leaves_.emplace_back();
            }
        }
        Leaf& leaf = *target;
        if (owned && atom == owned.get()) owned_paths_.push_back(std::move(owned));
        leaf.path_ = atom;
        leaf.category_ = category_atom((category && *category) ? category : "unknown");
        assign_value(leaf, value);
        shape_id_ = 0;
        leaves_changed();
        return SB_OK;
    }

    // Sets every field of `shape` (values[k] for the path given k-th) on a
    // record that has none yet: what set() does for each, without looking
    // anything up. SB_ERR_INVALID if the record has fields, or for a value
    // set() refuses (then nothing is set).
    sb_status set_shape(const ShapeData& shape, const sb_value* values) {
        if (!leaves_.empty() || !values) return SB_ERR_INVALID;
        for (const ShapeData::Entry& e : shape.entries)
            if (!valid_value(values[e.value])) return SB_ERR_INVALID;
        // A recycled record's leaves are set again in place: records of one
        // shape have values of about the same sizes at each place, which
        // then fit in the strings' buffers.
        if (!spare_.empty() && spare_next_ == 0) leaves_ = std::move(spare_);
        spare_ = {};
        spare_next_ = 0;
        leaves_.reserve(std::max<std::size_t>(shape.entries.size(), 32));
        leaves_.resize(shape.entries.size());
        std::size_t k = 0;
        for (const ShapeData::Entry& e : shape.entries) {
            Leaf& leaf = leaves_[k++];
            const sb_value& v = values[e.value];
            fit_buffer(leaf.str, v.type == SB_VALUE_STRING ? v.len : 0);
            leaf.path_ = adopt(e.path);
            leaf.category_ = adopt(e.category);
            assign_value(leaf, v);
        }
        shape_id_ = shape.id;
        leaves_changed();
        return SB_OK;
    }

    // Empties the record for reuse, as a new one but for the buffers of its
    // strings, which the next set_shape() (and set_meta) fill again: a
    // source that sets records of one shape batch after batch then
    // allocates (and frees) nearly nothing for their values. The bytes of
    // the old values stay in those buffers (as in any freed memory) until
    // overwritten; nothing reads them.
    void recycle() {
        for (std::string& m : meta_) m.clear();
        has_meta_ = 0;
        // The leaves are set aside whole, for the next set_shape() to set
        // again, or for append_path_of() to take in turn (any other change
        // starts from an empty vector).
        spare_ = std::move(leaves_);
        spare_next_ = 0;
        leaves_ = {};
        order_.clear();
        attachments_.clear();
        owned_paths_.clear();
        owned_categories_.clear();
        json_.clear();
        json_valid_ = false;
        shape_id_ = 0;
        cards_redacted_ = 0;
        cards_clean_ = false;
    }

    // For the host, which redacts card numbers in the leaves as they are
    // set, while they are in the cache: `n` were found and redacted. Until
    // the leaves next change, cards_clean() says none are left to look for.
    void note_cards_redacted(std::uint32_t n) {
        cards_redacted_ += n;
        cards_clean_ = true;
    }
    bool cards_clean() const { return cards_clean_; }
    // The card numbers note_cards_redacted() counted since the record was new.
    std::uint32_t cards_redacted() const { return cards_redacted_; }

    // The id of the shape (ShapeData::id) whose set_shape() gave this
    // record its paths, while they are still exactly those; else 0.
    std::uint64_t shape_id() const { return shape_id_; }

    // Asks the CPU to fetch the values (the envelope's and the leaves'
    // strings) ahead of their first read, for a loop over records to call on
    // the next one while it works on this one: a record made on another
    // thread, or a batch earlier, is no longer in this core's cache.
    // Changes nothing; reads only the strings' own headers (their pointers).
    void prefetch() const {
        for (const std::string& m : meta_) prefetch_line(m.data());
        for (const Leaf& leaf : leaves_) prefetch_line(leaf.str.data());
    }
    // The two steps before prefetch(), for a loop that can look further
    // ahead: prefetch() reads the record's own lines and its leaves, and
    // stalls where they are not in the cache. prefetch_self() asks for the
    // record's own lines (where its leaves are); prefetch_leaves(), called
    // later, reads those and asks for the leaves.
    void prefetch_self() const { prefetch_bytes(this, sizeof *this); }
    void prefetch_leaves() const { prefetch_bytes(leaves_.data(), leaves_.size() * sizeof(Leaf)); }
    // The same two steps for a recycled record, whose next set_shape()
    // writes into the leaves recycle() set aside (RecordPool::take, for the
    // records it hands out next).
    void prefetch_spare_leaves() const { prefetch_bytes(spare_.data(), spare_.size() * sizeof(Leaf)); }
    void prefetch_spare_values() const {
        for (const Leaf& leaf : spare_) prefetch_line(leaf.str.data());
    }

    // For the host: gives the record shape id `id` (from new_shape_id()),
    // which the caller gives only to records whose leaves have exactly the
    // same paths and categories, in order (copies a profile made from
    // records of one shape). What is memoised per shape relies on it.
    void assume_shape(std::uint64_t id) { shape_id_ = id; }

    // Appends a copy of `src`, a leaf of another record. Valid
    // only when `src` comes after every leaf here in path order and those
    // leaves are from the same record as `src` (a profile copying a subset of
    // a record's leaves, in order): then no conflict is possible.
    Leaf& append_copy(const Leaf& src) {
        Leaf& leaf = append_path_of(src);
        leaf.type = src.type;
        fit_buffer(leaf.str, src.str.size()); // (a recycled leaf's)
        leaf.str = src.str;
        leaf.i = src.i; // (and f: one of the two)
        return leaf;
    }

    // The same with a null value, for the caller to set. The atoms are
    // shared when interned, copied when `src`'s record owns them. On a
    // recycled record the leaves set aside are taken again in turn, for
    // their strings' buffers (a profile's copies of records of one shape
    // have values of about the same sizes at each place).
    Leaf& append_path_of(const Leaf& src) {
        sort_leaves();
        Leaf& leaf = spare_next_ < spare_.size() ? leaves_.emplace_back(std::move(spare_[spare_next_++]))
                                                 : leaves_.emplace_back();
        leaf.type = SB_VALUE_NULL; // (a recycled leaf's old value, else no-ops)
        leaf.str.clear();
        leaf.i = 0; // (and f)
        leaf.path_ = adopt(src.path_);
        leaf.category_ = adopt(src.category_);
        shape_id_ = 0;
        leaves_changed();
        return leaf;
    }

    // Reserves room for `n` leaves.
    void reserve_leaves(std::size_t n) { leaves_.reserve(n); }

    // Removes the leaf at `path`, or every leaf under it when it names a
    // subtree. Returns how many leaves went.
    std::size_t erase(std::string_view path) {
        sort_leaves();
        std::vector<PathSegment> want;
        if (!parse_path(path, want)) return 0;
        std::string prefix;
        append_sort_key(prefix, want);
        std::size_t before = leaves_.size();
        auto first = lower_bound(prefix);
        auto last = first;
        while (last != leaves_.end() && last->key().compare(0, prefix.size(), prefix) == 0) ++last;
        leaves_.erase(first, last);
        if (leaves_.size() != before) {
            shape_id_ = 0;
            leaves_changed();
        }
        return before - leaves_.size();
    }

    const Leaf* find(std::string_view path) const {
        sort_leaves();
        std::string built; // the sort key, when `path` is not interned as spelled
        std::string_view key;
        if (const PathAtom* atom = find_interned<PathAtom>(path)) {
            key = atom->key;
        } else {
            std::vector<PathSegment> segs;
            if (!parse_path(path, segs)) return nullptr;
            append_sort_key(built, segs);
            key = built;
        }
        auto pos = std::lower_bound(leaves_.begin(), leaves_.end(), key,
                                    [](const Leaf& l, std::string_view k) { return std::string_view(l.key()) < k; });
        if (pos != leaves_.end() && pos->key() == key) return &*pos;
        return nullptr;
    }

    const std::vector<Leaf>& leaves() const {
        sort_leaves();
        return leaves_;
    }

    // Attachments --------------------------------------------------------
    sb_status add_attachment(const sb_attachment& in) {
        // Read the caller's (possibly older, smaller) struct into ours.
        sb_attachment a{};
        std::memcpy(&a, &in, std::min<std::size_t>(in.struct_size ? in.struct_size : sizeof a, sizeof a));
        if (!a.uri || !*a.uri) return SB_ERR_INVALID;
        AttachmentData d;
        d.name = a.name ? a.name : "";
        d.uri = a.uri;
        d.media_type = a.media_type ? a.media_type : "application/octet-stream";
        d.size = a.size;
        d.sha256 = a.sha256 ? a.sha256 : "";
        d.category = (a.category && *a.category) ? a.category : "unknown";
        attachments_.push_back(std::move(d));
        dirty();
        return SB_OK;
    }

    const std::vector<AttachmentData>& attachments() const { return attachments_; }

    // Host-side access for storage and the pipeline ---------------------------

    // Envelope by index into kMetaKeys (nullptr when unset); the host stamps
    // keys sources may not set (id, source, received_at, ...) this way.
    const std::string* meta_at(int idx) const {
        return (has_meta_ & (1u << idx)) ? &meta_[static_cast<std::size_t>(idx)] : nullptr;
    }
    // Assigned in place: a recycled record's buffer takes the new value
    // without an allocation.
    void set_meta_at(int idx, std::string_view value) {
        meta_[static_cast<std::size_t>(idx)].assign(value.data(), value.size());
        has_meta_ |= 1u << idx;
        dirty();
    }
    void clear_meta_at(int idx) {
        meta_[static_cast<std::size_t>(idx)].clear();
        has_meta_ &= ~(1u << idx);
        dirty();
    }

    // Mutable access to the values (ingest redaction rewrites them in
    // place); a leaf's path and category stay as they are.
    std::span<Leaf> mutable_leaves() {
        sort_leaves();
        leaves_changed();
        return leaves_;
    }

    // The atom of a path (any valid spelling) or a category, for
    // push_sorted(): interned, or owned by this record when the table is
    // full. Null for a path that is not valid.
    const PathAtom* path_atom(std::string_view path) {
        std::unique_ptr<PathAtom> owned;
        const PathAtom* atom = intern(path, owned);
        if (owned) owned_paths_.push_back(std::move(owned));
        return atom;
    }
    const CategoryAtom* category_atom(std::string_view name) {
        // Leaves of a record mostly share a few categories: when the table
        // is full, the record's last owned one is likely the one asked for.
        if (!owned_categories_.empty() && owned_categories_.back()->name == name)
            return owned_categories_.back().get();
        std::unique_ptr<CategoryAtom> owned;
        const CategoryAtom* atom = intern(name, owned);
        if (owned) owned_categories_.push_back(std::move(owned));
        return atom;
    }

    // Appends a leaf known to come after every existing one in path order and
    // to be valid (storage reading back what it wrote), with a null value for
    // the caller to set. The atoms come from path_atom() and category_atom()
    // of this record.
    Leaf& push_sorted(const PathAtom* path, const CategoryAtom* category) {
        sort_leaves();
        Leaf& leaf = leaves_.emplace_back();
        leaf.path_ = path;
        leaf.category_ = category;
        shape_id_ = 0;
        leaves_changed();
        return leaf;
    }

    void push_attachment(AttachmentData a) {
        attachments_.push_back(std::move(a));
        dirty();
    }

    // JSON ---------------------------------------------------------------
    const std::string& json() const {
        if (!json_valid_) {
            json_.clear();
            write_json(json_);
            json_valid_ = true;
        }
        return json_;
    }

    // About what write_json takes, so that its output grows once: the
    // values, the paths (more than the keys written) and the punctuation.
    std::size_t json_size_hint() const {
        std::size_t size = 160;
        for (const std::string& m : meta_) size += m.size() + 16;
        for (const Leaf& leaf : leaves_) size += leaf.str.size() + leaf.path().size() + 8;
        return size;
    }

    void write_json(std::string& out) const {
        out.reserve(out.size() + json_size_hint());
        out += "{\"id\":";
        const char* id = meta("id");
        if (id)
            append_json_string(out, id);
        else
            out += "null";
        out += ",\"meta\":{";
        bool first = true;
        for (std::size_t k = 0; k < std::size(kMetaKeys); ++k) {
            if (k == 0 || !(has_meta_ & (1u << k))) continue;
            if (!first) out.push_back(',');
            first = false;
            append_json_key(out, kMetaKeys[k]);
            append_json_string(out, meta_[k]);
        }
        out += "},\"fields\":";
        write_fields_json(out);
        out += ",\"attachments\":[";
        for (std::size_t k = 0; k < attachments_.size(); ++k) {
            const AttachmentData& a = attachments_[k];
            if (k) out.push_back(',');
            out += "{\"name\":";
            append_json_string(out, a.name);
            out += ",\"uri\":";
            append_json_string(out, a.uri);
            out += ",\"media_type\":";
            append_json_string(out, a.media_type);
            out += ",\"size\":";
            append_json_int(out, a.size);
            if (!a.sha256.empty()) {
                out += ",\"sha256\":";
                append_json_string(out, a.sha256);
            }
            out += ",\"category\":";
            append_json_string(out, a.category);
            out.push_back('}');
        }
        out += "]}";
    }

    // The field tree as a JSON object: {"citizen":{"name":"…"},"turns":[…]}.
    // Gaps in arrays are written as null.
    void write_fields_json(std::string& out) const {
        if (shape_id_ != 0) { // the skeleton of its shape, and the values in it
            const Skeleton& sk = skeleton();
            const std::vector<Leaf>& ls = leaves();
            std::uint32_t from = 0;
            for (std::size_t k = 0; k < ls.size(); ++k) {
                out.append(sk.text.data() + from, sk.value_at[k] - from);
                from = sk.value_at[k];
                write_value(out, ls[k]);
            }
            out.append(sk.text.data() + from, sk.text.size() - from);
            return;
        }
        write_fields_skeleton(out, [](std::string& o, const Leaf& leaf) { write_value(o, leaf); });
    }

private:
    friend struct ShapeData; // orders and checks its paths as set() does

    // Whether set() takes `v`: a known type (a C plugin may pass any int
    // as the type: checked as an int), and a string's bytes when it has any.
    static bool valid_value(const sb_value& v) {
        const auto type = raw_enum(v.type);
        if (type < SB_VALUE_NULL || type > SB_VALUE_BOOL) return false;
        return !(type == SB_VALUE_STRING && v.str == nullptr && v.len != 0);
    }
    // Gives `leaf` the value `v` (valid_value), replacing what it had.
    static void assign_value(Leaf& leaf, const sb_value& v) {
        leaf.type = v.type;
        leaf.str.clear();
        leaf.i = 0; // (and f)
        switch (v.type) {
        case SB_VALUE_STRING: leaf.str.assign(v.str ? v.str : "", v.len); break;
        case SB_VALUE_INT: leaf.i = v.i; break;
        case SB_VALUE_BOOL: leaf.i = v.i != 0; break;
        case SB_VALUE_FLOAT: leaf.f = v.f; break;
        default: break;
        }
    }

    // The fields as JSON, calling value(out, leaf) where each leaf's value
    // goes: everything else depends only on the paths.
    template <class Value>
    void write_fields_skeleton(std::string& out, Value value) const {
        struct Open {
            bool array;
            bool first;
            std::int64_t next_index; // arrays: the index the next element has
        };
        const std::vector<PathSegment>* prev = nullptr;
        // [0] is the root object; a path has at most kMaxPathDepth segments.
        Open stack[kMaxPathDepth + 2];
        std::size_t depth = 0;
        stack[depth++] = {false, true, 0};
        out.push_back('{');
        for (const Leaf& leaf : leaves()) {
            const std::vector<PathSegment>& cur = leaf.segments();
            // Containers shared with the previous leaf stay open.
            std::size_t common = 0;
            while (prev && common + 1 < prev->size() && common + 1 < cur.size() &&
                   same_segment((*prev)[common], cur[common]))
                ++common;
            while (depth > common + 1) out.push_back(stack[--depth].array ? ']' : '}');
            for (std::size_t d = common; d < cur.size(); ++d) {
                Open& top = stack[depth - 1];
                if (top.array) {
                    for (; top.next_index < cur[d].index; ++top.next_index) {
                        if (!top.first) out.push_back(',');
                        top.first = false;
                        out += "null";
                    }
                    top.next_index = cur[d].index + 1;
                }
                if (!top.first) out.push_back(',');
                top.first = false;
                if (!cur[d].is_index()) append_json_key(out, cur[d].key);
                if (d + 1 < cur.size()) {
                    bool array = cur[d + 1].is_index();
                    out.push_back(array ? '[' : '{');
                    stack[depth++] = {array, true, 0};
                }
            }
            value(out, leaf);
            prev = &cur;
        }
        while (depth > 0) out.push_back(stack[--depth].array ? ']' : '}');
    }

    // The JSON of a shape's fields without their values, from this thread's
    // memo of the last shapes met: leaf k's value goes at value_at[k].
    struct Skeleton {
        std::uint64_t shape = 0;
        std::string text;
        std::vector<std::uint32_t> value_at;
    };
    const Skeleton& skeleton() const {
        Skeleton& sk = thread_memo_slot<Skeleton, 4>(shape_id_);
        if (sk.shape != shape_id_ || sk.value_at.size() != leaves_.size()) {
            sk.shape = shape_id_;
            sk.text.clear();
            sk.value_at.clear();
            write_fields_skeleton(sk.text, [&](std::string& o, const Leaf&) {
                sk.value_at.push_back(static_cast<std::uint32_t>(o.size()));
            });
        }
        return sk;
    }

    static void write_value(std::string& out, const Leaf& leaf) {
        switch (leaf.type) {
        case SB_VALUE_STRING: append_json_string(out, leaf.str); break;
        case SB_VALUE_INT: append_json_int(out, leaf.i); break;
        case SB_VALUE_FLOAT: append_json_double(out, leaf.f); break;
        case SB_VALUE_BOOL: out += leaf.i ? "true" : "false"; break;
        default: out += "null";
        }
    }

    static bool same_segment(const PathSegment& a, const PathSegment& b) {
        return a.is_index() == b.is_index() && (a.is_index() ? a.index == b.index : a.key == b.key);
    }

    // Whether path atom `a` comes before `b` in path order (equal atoms are
    // the same path: pointers are compared first).
    static bool before(const PathAtom* a, const PathAtom* b) { return a != b && a->key < b->key; }

    // An atom of another record's leaf, for a leaf of this one: the same
    // when interned, else this record's copy.
    const PathAtom* adopt(const PathAtom* atom) {
        if (atom->interned) return atom;
        owned_paths_.push_back(PathAtom::make(atom->path));
        return owned_paths_.back().get();
    }
    const CategoryAtom* adopt(const CategoryAtom* atom) {
        if (atom->interned) return atom;
        if (owned_categories_.empty() || owned_categories_.back()->name != atom->name)
            owned_categories_.push_back(CategoryAtom::make(atom->name));
        return owned_categories_.back().get();
    }

    std::vector<Leaf>::iterator lower_bound(const std::string& key) {
        sort_leaves();
        return std::lower_bound(leaves_.begin(), leaves_.end(), key,
                                [](const Leaf& l, const std::string& k) { return l.key() < k; });
    }

    // Whether the path of sort key `key` may sit beside the neighbour
    // `other` (a different key): it conflicts if one is an ancestor of the
    // other, or if a container on their common way is used with the other
    // kind (object vs array). Only the neighbours in sort order can conflict.
    static bool conflicts(const std::string& other, const std::string& key) {
        std::size_t n = std::min(other.size(), key.size());
        std::size_t i = 0;
        std::size_t seg_start = 0; // start of the segment being compared
        while (i < n && other[i] == key[i]) {
            // Track segment boundaries: a key ends at its 0x00, an index
            // spans 5 bytes.
            if (key[seg_start] == '\x01' ? i == seg_start + 4 : key[i] == '\0') seg_start = i + 1;
            ++i;
        }
        if (i == n) return true; // one is a prefix of the other
        // They diverge inside the segment starting at seg_start: a
        // conflict only if one is a key and the other an index there.
        return i == seg_start && other[i] != key[i];
    }

    // Puts leaves_ in path order after out-of-order set() calls.
    // In place (by the cycles of the permutation) and without allocating:
    // readers such as the classifier promise not to allocate.
    void sort_leaves() const {
        if (order_.empty()) return;
        constexpr std::uint32_t done = UINT32_MAX;
        for (std::uint32_t i = 0; i < order_.size(); ++i) {
            if (order_[i] == done) continue;
            if (order_[i] == i) {
                order_[i] = done;
                continue;
            }
            Leaf held = std::move(leaves_[i]);
            std::uint32_t j = i;
            for (;;) { // leaves_[j] takes leaves_[order_[j]]
                std::uint32_t from = order_[j];
                order_[j] = done;
                if (from == i) {
                    leaves_[j] = std::move(held);
                    break;
                }
                leaves_[j] = std::move(leaves_[from]);
                j = from;
            }
        }
        order_.clear();
    }

    void dirty() { json_valid_ = false; }
    void leaves_changed() {
        dirty();
        cards_clean_ = false;
    }

    // A recycled leaf's string buffer, given back when it is far larger than
    // the `need` bytes about to be set in it: a recycled record keeps no
    // more memory than its values take.
    static void fit_buffer(std::string& s, std::size_t need) {
        if (s.capacity() > std::max<std::size_t>(128, 2 * need)) std::string().swap(s);
    }

    std::string meta_[std::size(kMetaKeys)];
    std::uint32_t has_meta_ = 0;
    // In path order, except while order_ is not empty: then in the order
    // they were set, order_ holding their path order (see set()).
    mutable std::vector<Leaf> leaves_;
    mutable std::vector<std::uint32_t> order_;
    std::vector<AttachmentData> attachments_;
    // The atoms this record's leaves use that the table had no room for.
    std::vector<std::unique_ptr<PathAtom>> owned_paths_;
    std::vector<std::unique_ptr<CategoryAtom>> owned_categories_;
    mutable std::string json_;
    mutable bool json_valid_ = false;
    std::uint64_t shape_id_ = 0; // shape_id()
    // The leaves a recycle() set aside, for their strings' buffers; not
    // part of the record. append_path_of() takes them from spare_next_ on.
    std::vector<Leaf> spare_;
    std::size_t spare_next_ = 0;
    // note_cards_redacted()
    std::uint32_t cards_redacted_ = 0;
    bool cards_clean_ = false;
};

inline std::unique_ptr<ShapeData> ShapeData::make(const char* const* paths,
                                                  const char* const* categories, std::size_t n) {
    if (!paths && n) return nullptr;
    auto shape = std::make_unique<ShapeData>();
    shape->id = new_shape_id();
    shape->entries.reserve(n);
    for (std::size_t k = 0; k < n; ++k) {
        if (!paths[k]) return nullptr;
        std::unique_ptr<PathAtom> owned_path;
        const PathAtom* path = intern(std::string_view(paths[k]), owned_path);
        if (!path) return nullptr;
        if (owned_path) shape->owned_paths.push_back(std::move(owned_path));
        const char* name = categories && categories[k] && *categories[k] ? categories[k] : "unknown";
        std::unique_ptr<CategoryAtom> owned_category;
        const CategoryAtom* category = intern(std::string_view(name), owned_category);
        if (owned_category) shape->owned_categories.push_back(std::move(owned_category));
        shape->entries.push_back({path, category, static_cast<std::uint32_t>(k)});
    }
    std::stable_sort(shape->entries.begin(), shape->entries.end(),
                     [](const Entry& a, const Entry& b) { return RecordData::before(a.path, b.path); });
    for (std::size_t k = 1; k < shape->entries.size(); ++k) // the same leaf twice, or a conflict
        if (RecordData::conflicts(shape->entries[k - 1].path->key, shape->entries[k].path->key))
            return nullptr;
    return shape;
}

} // namespace sb::detail

// The opaque handles of the C ABI, defined for the host side.
struct sb_record {
    sb::detail::RecordData data;
    // A copy for a destination that reads records as JSON only
    // (SB_CAP_JSON_RECORDS), rendered where it was made (render_record), so
    // that the destination's thread neither reads nor frees a tree of
    // fields. `rendered` then holds, in one buffer: room for the record's
    // id (which the core knows only at commit: set_rendered_id), the JSON
    // from `rendered_at` on, a NUL, and the envelope's values, each NUL
    // terminated, at `rendered_meta[k]` for kMetaKeys[k] (0: not set).
    // `data` holds the id alone.
    std::string rendered;
    std::uint32_t rendered_at = 0;
    std::uint32_t rendered_end = 0; // where the JSON ends (its NUL)
    std::uint32_t rendered_meta[std::size(sb::detail::kMetaKeys)] = {};
    bool is_rendered = false;
    // Set when a field accessor is called on a rendered record: the plugin
    // broke its SB_CAP_JSON_RECORDS promise, and the delivery fails.
    mutable bool fields_read = false;
};
struct sb_shape {
    sb::detail::ShapeData data;
};

namespace sb::detail {

// Implementations of the record functions of sb_host_api, shared by the core
// and the test harness. Null pointers are answered with SB_ERR_INVALID.
inline sb_status record_set_meta(sb_record* r, const char* key, const char* value) {
    if (!r || !key || !value) return SB_ERR_INVALID;
    // Sources may set only what they know; the host stamps the rest.
    std::string_view k(key);
    if (k != SB_META_CHANNEL && k != SB_META_OCCURRED_AT && k != SB_META_EXTERNAL_ID &&
        k != SB_META_SUBJECT_REF)
        return SB_ERR_INVALID;
    // An empty id would make every later record of the source a duplicate.
    if (!*value) return SB_ERR_INVALID;
    return r->data.set_meta(k, value);
}

inline sb_status record_set(sb_record* r, const char* path, const sb_value* value,
                            const char* category) {
    if (!r || !path || !value) return SB_ERR_INVALID;
    return r->data.set(path, *value, category);
}

inline sb_shape* shape_new(const char* const* paths, const char* const* categories, size_t n) {
    std::unique_ptr<ShapeData> data = ShapeData::make(paths, categories, n);
    if (!data) return nullptr;
    auto* shape = new sb_shape;
    shape->data = std::move(*data);
    return shape;
}

inline void shape_free(sb_shape* shape) { delete shape; }

inline sb_status record_set_shape(sb_record* r, const sb_shape* shape, const sb_value* values) {
    if (!r || !shape) return SB_ERR_INVALID;
    return r->data.set_shape(shape->data, values);
}

inline sb_status record_add_attachment(sb_record* r, const sb_attachment* a) {
    if (!r || !a) return SB_ERR_INVALID;
    return r->data.add_attachment(*a);
}

inline const char* record_get_meta(const sb_record* r, const char* key) {
    if (!r || !key) return nullptr;
    if (r->is_rendered) { // the id in data, the rest after the JSON
        if (const char* id = r->data.meta(key)) return id;
        const int k = meta_index(key);
        if (k < 0 || !r->rendered_meta[k]) return nullptr;
        return r->rendered.c_str() + r->rendered_meta[k];
    }
    return r->data.meta(key);
}

// A rendered record (sb_record::is_rendered) has no field tree to answer
// from: the accessors say so, and note that they were asked.
inline bool fields_unavailable(const sb_record* r) {
    if (!r->is_rendered) return false;
    r->fields_read = true;
    return true;
}

inline size_t record_field_count(const sb_record* r) {
    if (!r || fields_unavailable(r)) return 0;
    return r->data.leaves().size();
}

inline void fill_field(const Leaf& l, sb_field* out) {
    sb_field f{};
    f.struct_size = sizeof f;
    f.path = l.path().c_str(); // atoms live as long as the record, at least
    f.category = l.category().c_str();
    f.value = sb_value{l.type, l.type == SB_VALUE_STRING ? l.str.data() : nullptr,
                       l.type == SB_VALUE_STRING ? l.str.size() : 0, l.value_i(), l.value_f()};
    copy_out(f, out); // the caller's struct may be older and smaller
}

inline sb_status record_field_at(const sb_record* r, size_t index, sb_field* out) {
    if (!r || !out) return SB_ERR_INVALID;
    if (fields_unavailable(r)) return SB_ERR_UNSUPPORTED;
    if (index >= r->data.leaves().size()) return SB_ERR_NOT_FOUND;
    fill_field(r->data.leaves()[index], out);
    return SB_OK;
}

inline sb_status record_get(const sb_record* r, const char* path, sb_field* out) {
    if (!r || !path || !out) return SB_ERR_INVALID;
    if (fields_unavailable(r)) return SB_ERR_UNSUPPORTED;
    const Leaf* l = r->data.find(path);
    if (!l) return SB_ERR_NOT_FOUND;
    fill_field(*l, out);
    return SB_OK;
}

inline size_t record_attachment_count(const sb_record* r) {
    return r ? r->data.attachments().size() : 0;
}

inline sb_status record_attachment_at(const sb_record* r, size_t index, sb_attachment* out) {
    if (!r || !out) return SB_ERR_INVALID;
    if (index >= r->data.attachments().size()) return SB_ERR_NOT_FOUND;
    const AttachmentData& a = r->data.attachments()[index];
    sb_attachment full{};
    full.struct_size = sizeof full;
    full.name = a.name.c_str();
    full.uri = a.uri.c_str();
    full.media_type = a.media_type.c_str();
    full.size = a.size;
    full.sha256 = a.sha256.empty() ? nullptr : a.sha256.c_str();
    full.category = a.category.c_str();
    copy_out(full, out);
    return SB_OK;
}

inline const char* record_json(const sb_record* r, size_t* len) {
    if (!r) return nullptr;
    if (r->is_rendered) {
        if (len) *len = r->rendered_end - r->rendered_at;
        return r->rendered.c_str() + r->rendered_at;
    }
    const std::string& j = r->data.json();
    if (len) *len = j.size();
    return j.c_str();
}

// Room before a rendered record's JSON for its id: `{"id":"` and the id
// where the JSON has `{"id":null`. The core's ids ("R<chunk>-<index>") take
// at most 31 bytes; a longer one moves the JSON.
inline constexpr std::size_t kRenderedIdRoom = 32;

// Makes `out` the rendered form of `copy` (a record without attachments):
// its meta, and its JSON as record_json gives it, with room for an id.
// One buffer, allocated once: the id's room, the JSON, the envelope.
inline void render_record(const sb_record& copy, sb_record& out) {
    static const int id_index = meta_index("id");
    std::size_t envelope = 0;
    for (int k = 0; k < static_cast<int>(std::size(kMetaKeys)); ++k) {
        if (out.data.meta_at(k)) out.data.clear_meta_at(k); // (a rendered record's meta is its id)
        if (const std::string* v = copy.data.meta_at(k)) envelope += v->size() + 1;
    }
    std::string& j = out.rendered;
    j.clear();
    j.reserve(kRenderedIdRoom + copy.data.json_size_hint() + 1 + envelope);
    j.append(kRenderedIdRoom, ' ');
    copy.data.write_json(j);
    out.rendered_at = static_cast<std::uint32_t>(kRenderedIdRoom);
    out.rendered_end = static_cast<std::uint32_t>(j.size());
    j.push_back('\0');
    for (int k = 0; k < static_cast<int>(std::size(kMetaKeys)); ++k) {
        out.rendered_meta[k] = 0;
        const std::string* v = copy.data.meta_at(k);
        if (!v) continue;
        if (k == id_index) { // kept where set_rendered_id keeps it
            out.data.set_meta_at(k, *v);
            continue;
        }
        out.rendered_meta[k] = static_cast<std::uint32_t>(j.size());
        j.append(*v).push_back('\0');
    }
    out.is_rendered = true;
    out.fields_read = false;
}

// Gives a rendered record its id: in its meta, and in its JSON in place of
// the id it had (null, or a string).
inline void set_rendered_id(sb_record& r, std::string_view id) {
    static const int id_index = meta_index("id");
    r.data.set_meta_at(id_index, id);
    std::string& j = r.rendered;
    const std::size_t at = r.rendered_at;
    constexpr std::string_view open = "{\"id\":";
    if (j.compare(at, open.size(), open) != 0) return; // not record_json's form
    // Where the old id's value ends.
    std::size_t end = at + open.size();
    if (j.compare(end, 4, "null") == 0) {
        end += 4;
    } else if (end < j.size() && j[end] == '"') {
        for (++end; end < j.size() && j[end] != '"'; ++end)
            if (j[end] == '\\') ++end;
        ++end;
    } else {
        return;
    }
    std::string head(open);
    append_json_string(head, id);
    if (head.size() <= end) {
        std::memcpy(j.data() + end - head.size(), head.data(), head.size());
        r.rendered_at = static_cast<std::uint32_t>(end - head.size());
        return;
    }
    // Longer than the room: what follows moves.
    const std::size_t grown = head.size() - end;
    j.replace(0, end, head);
    r.rendered_at = 0;
    r.rendered_end += static_cast<std::uint32_t>(grown);
    for (std::uint32_t& at : r.rendered_meta)
        if (at) at += static_cast<std::uint32_t>(grown);
}

// Fills the record functions of a host table.
inline void fill_record_api(sb_host_api& api) {
    api.record_set_meta = &record_set_meta;
    api.record_set = &record_set;
    api.record_add_attachment = &record_add_attachment;
    api.record_get_meta = &record_get_meta;
    api.record_field_count = &record_field_count;
    api.record_field_at = &record_field_at;
    api.record_get = &record_get;
    api.record_attachment_count = &record_attachment_count;
    api.record_attachment_at = &record_attachment_at;
    api.record_json = &record_json;
    api.shape_new = &shape_new;
    api.shape_free = &shape_free;
    api.record_set_shape = &record_set_shape;
}

} // namespace sb::detail
