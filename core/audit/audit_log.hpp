#pragma once

// The audit trail: append-only, hash-chained, one text file per UTC day.
//
// Every ingest, disclosure, delivery and deletion leaves one entry (DESIGN.md,
// principle 5). The trail itself must hold no personal data, so that it can be
// kept and shown to a DPO after the records it describes are gone:
//
//   - entry kinds and attribute keys are `Name`s, which only a string literal
//     in the source can make (consteval), so nothing read from a record can
//     become a key;
//   - values are for ids (record, attempt, receipt), names of things
//     (destination, purpose, profile@version, actor) and field *paths* with
//     their transforms ("citizen.name:keep,contact.phone:mask"), never field
//     values, free text or error messages that might quote input. The callers
//     are responsible for that; reviewers should read every `append` call
//     with this rule in mind.
//
// File format (UTF-8, one entry per line):
//
//   <seq>\t<time>\t<kind>\t<record id or ->\t<detail>\t<hash>\n
//
//   seq     decimal, 1, 2, 3... consecutive across files
//   time    RFC 3339 UTC with milliseconds, "2025-01-06T09:00:00.000Z"
//   detail  key=value;key=value (keys are Names; values escaped, below)
//   hash    lowercase hex SHA-256 of  <previous hash> "\n" <the line up to,
//           not including, the tab before the hash>; the first entry's
//           previous hash is `genesis_hash` (64 zeros). One link by hand:
//           printf '%s\n%s' "$prev_hash" "$line_without_tab_hash" | sha256sum
//
// Escaping inside record ids and values: "\\" "\;" "\t" "\n" "\r" and "\xHH"
// for other control bytes and bytes that are not valid UTF-8, so an entry is
// always exactly one line and a detail always splits on unescaped ';'.
//
// Files are `audit-YYYY-MM-DD.log` named after the UTC day of the entries'
// timestamps; the file never moves back to an earlier day (a late timestamp
// from a slow thread at midnight goes into the current file), so reading the
// files in name order gives the entries in seq order.
//
// What the chain proves: an edited, removed, reordered or inserted entry, or a
// removed file, shows up in `verify`. Someone who can write the files could
// also rewrite the chain from an edit onwards, or cut the tail off; only a copy
// of the head kept elsewhere (the journal keeps one) catches that, so pass it
// to `verify`. Entries appended after that copy was taken are not covered by it.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace switchboard::audit {

// An entry kind or attribute key: [a-z][a-z0-9_.-]*, at most 48 characters.
// Only constructible from a string literal, checked at compile time.
class Name {
public:
    template <std::size_t N>
    consteval Name(const char (&literal)[N]) : text_(literal, N - 1) {
        // Throwing here is a compile error: the literal is not a valid name.
        if (!valid(text_)) throw "audit::Name must be [a-z][a-z0-9_.-]*, at most 48 characters";
    }
    constexpr std::string_view view() const { return text_; }
    friend constexpr bool operator==(Name a, Name b) { return a.text_ == b.text_; }

private:
    static constexpr bool valid(std::string_view s) {
        if (s.empty() || s.size() > 48 || s[0] < 'a' || s[0] > 'z') return false;
        for (char c : s)
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                  c == '-'))
                return false;
        return true;
    }
    std::string_view text_;
};

// The kinds that principle 5 requires; other components may add their own.
namespace kind {
inline constexpr Name ingest = "ingest";
inline constexpr Name disclose = "disclose";
inline constexpr Name deliver = "deliver";
inline constexpr Name erase = "erase";
inline constexpr Name erasure = "erasure";
// Attributes that many entries share, written once per file (append_shared).
inline constexpr Name set = "set";
} // namespace kind

struct Attr {
    Name key;
    std::string value; // an id or a name, never content (see above)
};

struct Entry {
    Name kind;
    std::string record_id; // empty: the entry is about no one record ("-")
    std::vector<Attr> attrs;
};

inline constexpr std::string_view genesis_hash =
    "0000000000000000000000000000000000000000000000000000000000000000";

// A position in the chain: the seq and hash of one entry ({0, genesis} when empty).
struct Head {
    std::uint64_t seq = 0;
    std::string hash{genesis_hash};
    bool operator==(const Head&) const = default;
};

// Builds a detail for the fast `append`: adds ";key=value" (no ';' before the
// first), escaping the value. Reuse one string to avoid allocations.
void append_attr(std::string& detail, Name key, std::string_view value);
std::string format_detail(const std::vector<Attr>& attrs);
// Splits a detail read back from a file into unescaped (key, value) pairs.
std::vector<std::pair<std::string, std::string>> parse_detail(std::string_view detail);
// Undoes the escaping of one record id or value.
std::string unescape(std::string_view text);
// A run of sequence numbers, as a `deliver` entry for several deliveries
// names them ("seqs=F-L"): written, and read back (false unless "F-L" with
// 0 < F <= L).
std::string seq_run(std::uint64_t first, std::uint64_t last);
bool parse_seq_run(std::string_view text, std::uint64_t& first, std::uint64_t& last);

// One entry read back from the files.
struct Record {
    std::uint64_t seq = 0;
    std::int64_t ts_ms = 0;
    std::string kind;
    std::string record_id; // unescaped; empty for "-"
    std::string detail;    // as stored (escaped): use parse_detail
    std::string hash;
};

struct SyncResult {
    std::error_code error; // set: nothing more can be written; see sync()
    Head head;             // durable on return when !error
    bool ok() const { return !error; }
};

class AuditLog {
public:
    using Warn = std::function<void(std::string_view message)>;

    // Creates `dir` (mode 0700) and continues the chain from the last entry
    // found there. A torn tail (a crash in the middle of a write: bytes after
    // the last newline, or lines after the last well-formed one) is cut off
    // so the chain continues from the last good entry; the bytes removed are
    // kept in `<file>.torn` (never silently destroyed) and `warn` is told
    // (default: stderr). Only the tail is read: use verify() to check the
    // whole chain. Throws std::runtime_error, naming the file, when the
    // directory or a file cannot be created, read or repaired.
    explicit AuditLog(std::filesystem::path dir, Warn warn = {});
    // Syncs what is buffered (best effort: a failure goes to `warn`).
    ~AuditLog();
    AuditLog(const AuditLog&) = delete;
    AuditLog& operator=(const AuditLog&) = delete;

    // Adds one entry to the in-memory buffer and advances the chain; nothing
    // reaches the disk until sync(). `ts_ms` is Unix milliseconds (from the
    // injectable clock). Thread-safe. After a sync() failure, entries are
    // dropped (the log must be reopened; see sync()).
    void append(std::int64_t ts_ms, const Entry& entry);
    // Fast path: `detail` built with append_attr (or otherwise already
    // escaped). Control bytes and invalid UTF-8 in it are still escaped so the
    // entry stays one line; backslashes are kept as they are.
    void append(std::int64_t ts_ms, Name kind, std::string_view record_id,
                std::string_view detail);
    // Fast path for attributes that many entries share (a disclosure's
    // purpose, profile, route and the fields sent are the same for every
    // record of one shape on one route): the entry is written as
    // "<detail>;set=<id>", and `shared` (built like `detail`) once per day
    // file, before its first use there, as an entry of kind `set`:
    // "set=<id>;<shared>", record "-". <id> is the first 16 hex digits of
    // SHA-256(<shared>, as written). read_records and read_range put the
    // shared attributes back in place of set=<id>; verify checks that each
    // set=<id> names a set entry earlier in the same file and that each set
    // entry's id matches its attributes. Keep `shared` unchanged while
    // referenced (the log keeps a reference to recognise it).
    void append_shared(std::int64_t ts_ms, Name kind, std::string_view record_id,
                       std::string_view detail, const std::shared_ptr<const std::string>& shared);

    // Writes everything appended so far (one write() per day file) and
    // fdatasyncs it. Callers group-commit: many appends, one sync. Returns the
    // head that is now durable: store that (not last_seq()/last_hash(), which
    // may include entries appended by other threads since) with the journal.
    // Concurrent syncs are serialised; appends are not blocked by the disk.
    // Any write or fsync error is sticky (after a failed fsync the kernel may
    // have dropped the data, so retrying cannot be trusted): every later
    // sync() returns it. Reopening the log repairs the tail.
    [[nodiscard]] SyncResult sync();

    // Group commit with a store (the journal): the entries of one store
    // transaction are appended, their text is saved in the transaction (so
    // they commit atomically with what they describe), and the file is
    // written later by sync(). The caller serialises append/mark/sync for
    // this to hold: no sync() may run between mark() and text_since().
    struct Mark {
        std::size_t pending = 0;
        std::size_t segments = 0;
        std::size_t last_segment_end = 0;
        std::int64_t day = 0;
        Head head;
    };
    Mark mark() const;
    // The lines appended since `mark`, exactly as they will be written.
    std::string text_since(const Mark& mark) const;
    // Forgets the entries appended since `mark` (their transaction failed).
    void rollback(const Mark& mark);
    // Recovery: re-appends lines saved by a committed transaction whose
    // entries did not reach the file (a crash between commit and sync).
    // Lines at or below the current head are skipped; the rest must continue
    // the chain exactly (same seq order and hashes), or std::runtime_error.
    void append_saved(std::string_view lines);

    // Write-ahead recovery (the journal): entries are written and synced
    // here before the store transaction they belong to commits, and the
    // transaction records the head it reaches. After a crash between the
    // two, the entries after `head` (the store's) describe changes that never
    // happened: this moves them to `<file>.uncommitted` (kept, never
    // destroyed) and continues the chain from `head`. Returns how many were
    // removed. Call it before any append. A trail that ends before `head`
    // (entries missing) or differs at it is left as it is, with a warning:
    // `verify` reports it. Throws std::runtime_error naming the file when
    // it cannot be read or repaired.
    std::uint64_t cut_after(const Head& head);

    // The head including buffered entries.
    std::uint64_t last_seq() const;
    std::string last_hash() const;
    Head head() const;
    // The head as of the last successful sync (or as found when opened).
    Head durable_head() const;
    const std::filesystem::path& dir() const;

    struct Problem {
        std::uint64_t seq = 0; // 0 when unknown (a malformed line)
        std::string file;      // file name inside the directory
        std::size_t line = 0;  // 1-based
        std::string what;
    };
    struct VerifyResult {
        bool ok = true;
        std::uint64_t entries = 0; // well-formed entries read
        std::uint64_t files = 0;
        Head last;                 // the highest seq seen and its stated hash
        std::vector<Problem> problems; // file and line order; 1000, then "N more problems"
    };
    // Reads every file in order and checks seq continuity and every hash
    // link; with `head` (a copy kept elsewhere), also that the chain reaches
    // it with the same hash. Keeps going after a problem to report what else
    // it can. Reads only what was synced; a torn last line is a problem.
    static VerifyResult verify(const std::filesystem::path& dir,
                               std::optional<Head> head = std::nullopt);

    // Checks that `lines` (entries saved with their transaction, not yet in
    // the files) continue the chain from `from`; returns the head they reach,
    // or nullopt with `problem` set.
    static std::optional<Head> verify_saved(const Head& from, std::string_view lines,
                                            std::string& problem);

    // Reading back, for subject access reports and tests. These do not
    // verify (run verify for that); malformed lines are skipped.
    // `visit` returns false to stop. scan gives entries as written;
    // read_records and read_range put shared attributes (append_shared) back
    // in place of their set=<id>.
    static void scan(const std::filesystem::path& dir,
                     const std::function<bool(const Record&)>& visit);
    // With `with_delivery_runs`, also every `deliver` entry of a run of
    // seqs ("seqs=F-L", record "-"), which names no record.
    static std::vector<Record> read_records(const std::filesystem::path& dir,
                                            const std::set<std::string, std::less<>>& record_ids,
                                            bool with_delivery_runs = false);
    // Entries with first <= seq <= last; skips files that end before `first`.
    static std::vector<Record> read_range(const std::filesystem::path& dir, std::uint64_t first,
                                          std::uint64_t last);

private:
    struct State;
    void append_line(std::int64_t ts_ms, Name kind, std::string_view record_id,
                     const std::vector<Attr>* attrs, std::string_view detail);
    void append_locked(State& s, std::int64_t ts_ms, Name kind, std::string_view record_id,
                       const std::vector<Attr>* attrs, std::string_view detail, std::string_view set_id);
    std::unique_ptr<State> s_;
};

} // namespace switchboard::audit
