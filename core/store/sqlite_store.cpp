// SQLite implementation of the journal store.
//
// One connection, used under a mutex: SQLite serialises writers anyway, and
// one connection lets the store checkpoint the write-ahead log to nothing
// after deletions (no reader can pin old pages). WAL mode with
// synchronous=FULL makes each commit durable (fsync) before write() returns;
// secure_delete=ON overwrites deleted content with zeros, so expired values do
// not linger in free pages. A new journal has 16 KiB pages (SQLite's default
// is 4 KiB): a group commit writes chunk bodies of hundreds of KiB, and each
// page costs a WAL frame, a checkpoint copy and the kernel's per-page work;
// 16 KiB pages took about a fifth off the daemon's CPU per record in the
// benchmarks (docs/performance.md). A journal made earlier keeps its size.
//
// Chunk bodies are not in the database but in segment files beside it
// (chunk_files.hpp): a chunk row says where its body is (seg, off, len). A
// body is appended to the current segment inside the write transaction and
// synced before the commit that names it; a deleted or replaced body's
// range is listed in chunk_holes in the same transaction and punched out of
// its file once that commits (again at the next write, after a crash in
// between). A chunk written by an earlier version, its body in the row, is
// still read from there.

#include "store/chunk_files.hpp"
#include "store/codec.hpp"
#include "store/store.hpp"

#include <sqlite3.h>

#include <cstring>
#include <map>
#include <mutex>
#include <set>

namespace switchboard::store {

namespace {

const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
  id INTEGER PRIMARY KEY,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  count INTEGER NOT NULL,
  body BLOB NOT NULL,
  seg INTEGER,
  off INTEGER,
  len INTEGER);
CREATE INDEX IF NOT EXISTS chunks_expiry ON chunks(expires_at);
CREATE TABLE IF NOT EXISTS outbox(
  destination TEXT NOT NULL,
  first_seq INTEGER NOT NULL,
  count INTEGER NOT NULL,
  chunk INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  indexes BLOB NOT NULL,
  payloads BLOB,
  PRIMARY KEY(destination, first_seq));
CREATE INDEX IF NOT EXISTS outbox_chunk ON outbox(chunk);
CREATE TABLE IF NOT EXISTS progress(destination TEXT PRIMARY KEY, acked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters(
  id INTEGER PRIMARY KEY,
  destination TEXT NOT NULL,
  seq INTEGER NOT NULL,
  record_id TEXT NOT NULL,
  chunk INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  dead_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  error TEXT NOT NULL,
  payload BLOB NOT NULL,
  retry INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS dead_letters_chunk ON dead_letters(chunk);
CREATE TABLE IF NOT EXISTS state(
  instance TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY(instance, key));
CREATE TABLE IF NOT EXISTS claims(hash INTEGER PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS claims_expiry ON claims(expires_at);
CREATE TABLE IF NOT EXISTS quarantine(
  id INTEGER PRIMARY KEY,
  instance TEXT NOT NULL, ref TEXT NOT NULL, reason TEXT NOT NULL,
  received_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, bytes BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS quarantine_expiry ON quarantine(expires_at);
CREATE TABLE IF NOT EXISTS erase_tasks(
  id INTEGER PRIMARY KEY,
  instance TEXT NOT NULL, target INTEGER NOT NULL, reason INTEGER NOT NULL,
  created_at INTEGER NOT NULL, next_at INTEGER NOT NULL, attempts INTEGER NOT NULL,
  done INTEGER NOT NULL, items BLOB NOT NULL, last_error TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS erase_tasks_due ON erase_tasks(next_at);
CREATE TABLE IF NOT EXISTS audit_spool(
  first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, lines BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS holds(
  id INTEGER PRIMARY KEY,
  reason TEXT NOT NULL, set_by TEXT NOT NULL, set_at INTEGER NOT NULL, until INTEGER NOT NULL,
  sar TEXT NOT NULL, ended_at INTEGER NOT NULL DEFAULT 0, ended_by TEXT NOT NULL DEFAULT '',
  audited INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS hold_records(
  hold INTEGER NOT NULL, chunk INTEGER NOT NULL, record_id TEXT NOT NULL,
  PRIMARY KEY(hold, record_id));
CREATE INDEX IF NOT EXISTS hold_records_chunk ON hold_records(chunk);
CREATE TABLE IF NOT EXISTS erasures(
  id INTEGER PRIMARY KEY,
  requested_by TEXT NOT NULL, requested_at INTEGER NOT NULL, done_at INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS erasures_done ON erasures(done_at);
CREATE TABLE IF NOT EXISTS erasure_records(
  erasure INTEGER NOT NULL, record_id TEXT NOT NULL, chunk INTEGER NOT NULL,
  outcome TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(erasure, record_id));
)";
// Tables are created with IF NOT EXISTS: a journal made by an earlier
// version gains the tables it lacks (holds, erasures, ...) when opened, and
// the columns (migrate_chunks()).

// Where chunk bodies are: the segment of each (for chunk_holes and removing
// a segment none of whose chunks is left), and the ranges to punch out.
const char* kChunkFilesSchema = R"(
CREATE INDEX IF NOT EXISTS chunks_seg ON chunks(seg) WHERE seg IS NOT NULL;
CREATE TABLE IF NOT EXISTS chunk_holes(seg INTEGER NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL);
)";

// A hold is in force at ?1 when it has not ended and its end date is later.
#define SB_HOLD_IN_FORCE "h.ended_at=0 AND (h.until=0 OR h.until>?1)"

class Stmt {
public:
    Stmt(sqlite3* db, const char* sql) {
        if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr) != SQLITE_OK)
            throw StoreError(std::string("cannot prepare statement: ") + sqlite3_errmsg(db));
    }
    ~Stmt() { sqlite3_finalize(s_); }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    Stmt& bind(int i, std::int64_t v) {
        sqlite3_bind_int64(s_, i, v);
        return *this;
    }
    Stmt& bind(int i, std::string_view v) {
        sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
        return *this;
    }
    Stmt& blob(int i, std::string_view v) {
        sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
        return *this;
    }
    Stmt& null(int i) {
        sqlite3_bind_null(s_, i);
        return *this;
    }
    // Steps once: true if a row is available.
    bool step() {
        int rc = sqlite3_step(s_);
        if (rc == SQLITE_ROW) return true;
        if (rc == SQLITE_DONE) return false;
        throw StoreError(std::string("store: ") + sqlite3_errmsg(sqlite3_db_handle(s_)));
    }
    void run() {
        step();
        reset();
    }
    void reset() {
        sqlite3_reset(s_);
        sqlite3_clear_bindings(s_);
    }
    std::int64_t i64(int col) const { return sqlite3_column_int64(s_, col); }
    std::string text(int col) const {
        const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
        return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col))) : std::string();
    }
    std::string bytes(int col) const {
        const auto* p = static_cast<const char*>(sqlite3_column_blob(s_, col));
        return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col))) : std::string();
    }
    bool is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
    sqlite3_stmt* raw() const { return s_; }

private:
    sqlite3_stmt* s_ = nullptr;
};

// Resets a statement when a read is done, whatever happens.
struct Reset {
    Stmt& s;
    ~Reset() { s.reset(); }
};

class SqliteStore;

class SqliteTxn : public Txn {
public:
    explicit SqliteTxn(SqliteStore& s) : s_(s) {}
    bool claim(std::uint64_t key_hash, std::int64_t expires_at) override;
    std::int64_t next_chunk_id() override;
    void put_chunk(const ChunkInfo& info, std::string_view body) override;
    void put_chunk(const ChunkInfo& info, const std::vector<std::string_view>& pieces) override;
    void replace_chunk_body(std::int64_t id, std::string_view body) override;
    void delete_chunk(std::int64_t id) override;
    void put_outbox(const OutboxRow& row) override;
    void set_acked(const std::string& destination, std::uint64_t acked_seq) override;
    void delete_outbox_for_chunk(std::int64_t chunk) override;
    void put_dead_letter(const DeadLetter& d) override;
    void delete_dead_letter(std::int64_t id) override;
    bool request_retry(std::int64_t id) override;
    void update_dead_letter(std::int64_t id, std::uint32_t attempts, const std::string& error) override;
    void delete_dead_letters_for_chunk(std::int64_t chunk) override;
    void set_state(const std::string& instance, const std::string& key,
                   const std::optional<std::string>& value) override;
    void put_quarantine(const QuarantineItem& q) override;
    void put_erase_task(const EraseTask& t) override;
    void update_erase_task(const EraseTask& t) override;
    void delete_erase_task(std::int64_t id) override;
    void delete_audit_upto(std::uint64_t last_seq) override;
    void set_meta(const std::string& key, const std::string& value) override;
    std::uint64_t expire_quarantine(std::int64_t now) override;
    std::uint64_t expire_claims(std::int64_t now) override;
    std::int64_t put_hold(const Hold& hold, const std::vector<std::int64_t>& chunks) override;
    bool end_hold(std::int64_t id, std::int64_t at, const std::string& by) override;
    void set_hold_audited(std::int64_t id, int audited) override;
    std::uint64_t purge_holds(std::int64_t ended_before) override;
    void replace_outbox_payloads(const std::string& destination, std::uint64_t first_seq,
                                 std::string_view payloads) override;
    std::int64_t put_erasure(const Erasure& erasure) override;
    void finish_erasure(const Erasure& erasure, std::int64_t done_at) override;
    std::uint64_t purge_erasures(std::int64_t done_before) override;

private:
    SqliteStore& s_;
};

class SqliteStore : public Store {
public:
    SqliteStore(const std::string& file, std::uint64_t segment_bytes)
        : files_(file + "-chunks"), segment_bytes_(segment_bytes) {
        if (sqlite3_open_v2(file.c_str(), &db_,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            nullptr) != SQLITE_OK) {
            std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
            sqlite3_close(db_);
            throw StoreError("cannot open " + file + ": " + msg);
        }
        sqlite3_busy_timeout(db_, 5000);
        exec("PRAGMA page_size=16384"); // only takes effect on a new (empty) database
        exec("PRAGMA journal_mode=WAL");
        exec("PRAGMA synchronous=FULL");
        exec("PRAGMA secure_delete=ON");
        exec("PRAGMA foreign_keys=OFF");
        exec("PRAGMA temp_store=MEMORY");
        exec("PRAGMA cache_size=-16384"); // 16 MiB: bounded whatever the backlog
        exec(kSchema);
        migrate_chunks();
        exec(kChunkFilesSchema);
        remove_orphan_segments();
    }
    ~SqliteStore() override {
        stmts_.clear();
        if (db_) {
            sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
            sqlite3_close(db_);
        }
    }

    void write(const std::function<void(Txn&)>& fn) override {
        std::lock_guard lock(mutex_);
        exec("BEGIN IMMEDIATE");
        seg_ = SegmentTxn{};
        try {
            settle_holes();
            SqliteTxn txn(*this);
            fn(txn);
            if (seg_.appended) {
                // The bodies are on disk before the commit that names them.
                files_.sync(seg_.seg);
                txn.set_meta("chunks.segment", std::to_string(seg_.seg));
                txn.set_meta("chunks.end", std::to_string(seg_.end));
            }
            exec("COMMIT");
        } catch (...) {
            sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
            if (seg_.appended) try { // what it wrote is cut off now (else at the next write)
                files_.open_for_append(seg_.seg, seg_.begin);
            } catch (const StoreError&) {
            }
            seg_ = SegmentTxn{};
            throw;
        }
        punch_holes();
    }

    void scrub() override {
        std::lock_guard lock(mutex_);
        int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
        if (rc != SQLITE_OK) throw StoreError(std::string("checkpoint: ") + sqlite3_errmsg(db_));
    }

    std::optional<std::string> state(const std::string& instance, const std::string& key) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT value FROM state WHERE instance=?1 AND key=?2");
        Reset r{s};
        s.bind(1, instance).bind(2, key);
        if (!s.step()) return std::nullopt;
        return s.text(0);
    }

    std::optional<std::string> meta(const std::string& key) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT value FROM meta WHERE key=?1");
        Reset r{s};
        s.bind(1, key);
        if (!s.step()) return std::nullopt;
        return s.text(0);
    }

    std::optional<std::string> chunk_body(std::int64_t id) override {
        std::string body;
        if (!read_chunk_body(id, [&](std::size_t size) {
                body.resize(size);
                return body.data();
            }))
            return std::nullopt;
        return body;
    }

    bool read_chunk_body(std::int64_t id, const std::function<char*(std::size_t)>& buffer) override {
        std::lock_guard lock(mutex_);
        for (int attempt = 0; attempt < 3; ++attempt) {
            auto place = chunk_place(id);
            if (!place) return false;
            if (place->seg == 0) { // an earlier version's chunk: the body is in the row
                Stmt& s = st("SELECT body FROM chunks WHERE id=?1 AND seg IS NULL");
                Reset r{s};
                s.bind(1, id);
                if (!s.step()) continue; // gone, or moved out meanwhile (another process)
                const auto* p = static_cast<const char*>(sqlite3_column_blob(s.raw(), 0));
                const auto n = static_cast<std::size_t>(sqlite3_column_bytes(s.raw(), 0));
                char* to = buffer(n);
                if (n) std::memcpy(to, p, n);
                return true;
            }
            files_.read(place->seg, place->off, place->len, id, buffer(place->len));
            // Another process (a command run beside the daemon) may have
            // deleted or moved the chunk, and punched it out, between the
            // look-up and the read: what was read stands if it is still there.
            auto now = chunk_place(id);
            if (!now) return false;
            if (*now == *place) return true;
        }
        throw StoreError("chunk " + std::to_string(id) + " kept moving while it was read");
    }

    std::optional<ChunkInfo> chunk_info(std::int64_t id) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT id, created_at, expires_at, count FROM chunks WHERE id=?1");
        Reset r{s};
        s.bind(1, id);
        if (!s.step()) return std::nullopt;
        return ChunkInfo{s.i64(0), s.i64(1), s.i64(2), static_cast<std::uint32_t>(s.i64(3))};
    }

    std::vector<ChunkInfo> expired_chunks(std::int64_t now, std::size_t limit) override {
        // A held chunk is skipped whole (see docs/governance.md); the hold
        // tables are small, so this costs what expired, as before.
        return chunk_list("SELECT id, created_at, expires_at, count FROM chunks WHERE expires_at<=?1 "
                          "AND id NOT IN (SELECT r.chunk FROM hold_records r JOIN holds h ON h.id=r.hold "
                          "WHERE " SB_HOLD_IN_FORCE ") ORDER BY expires_at LIMIT ?2",
                          now, limit);
    }

    std::vector<ChunkInfo> chunks_expiring_before(std::int64_t until, std::size_t limit) override {
        return chunk_list("SELECT id, created_at, expires_at, count FROM chunks WHERE expires_at<=?1 "
                          "ORDER BY expires_at LIMIT ?2",
                          until, limit);
    }

    std::uint64_t acked(const std::string& destination) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT acked FROM progress WHERE destination=?1");
        Reset r{s};
        s.bind(1, destination);
        return s.step() ? static_cast<std::uint64_t>(s.i64(0)) : 0;
    }

    std::uint64_t last_seq(const std::string& destination) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT first_seq + count - 1 FROM outbox WHERE destination=?1 "
                     "ORDER BY first_seq DESC LIMIT 1");
        Reset r{s};
        s.bind(1, destination);
        std::uint64_t from_outbox = s.step() ? static_cast<std::uint64_t>(s.i64(0)) : 0;
        s.reset();
        // Outbox rows of expired records are gone; the progress row remembers.
        Stmt& p = st("SELECT acked FROM progress WHERE destination=?1");
        Reset rp{p};
        p.bind(1, destination);
        std::uint64_t acked = p.step() ? static_cast<std::uint64_t>(p.i64(0)) : 0;
        p.reset();
        Stmt& m = st("SELECT value FROM meta WHERE key=?1");
        Reset rm{m};
        m.bind(1, "last_seq." + destination);
        std::uint64_t recorded = m.step() ? std::stoull(m.text(0)) : 0;
        return std::max({from_outbox, acked, recorded});
    }

    std::vector<OutboxRow> outbox_after(const std::string& destination, std::uint64_t after_seq,
                                        std::size_t limit, std::size_t max_entries) override {
        std::lock_guard lock(mutex_);
        // Rows hold disjoint, increasing seq ranges: only the last row that
        // starts at or before after_seq can reach past it. Bounding first_seq
        // by it keeps this an index range, not a scan of every row kept.
        Stmt& s = st("SELECT destination, first_seq, count, chunk, expires_at, indexes, payloads "
                     "FROM outbox WHERE destination=?1 AND first_seq + count - 1 > ?2 "
                     "AND first_seq >= coalesce((SELECT max(first_seq) FROM outbox "
                     "WHERE destination=?1 AND first_seq <= ?2), 0) "
                     "ORDER BY first_seq LIMIT ?3");
        Reset r{s};
        s.bind(1, destination).bind(2, static_cast<std::int64_t>(after_seq)).bind(3, static_cast<std::int64_t>(limit));
        std::vector<OutboxRow> out;
        std::size_t entries = 0;
        while (entries < max_entries && s.step()) {
            out.push_back(row(s));
            entries += out.back().count;
        }
        return out;
    }

    std::vector<OutboxRow> outbox_for_chunk(std::int64_t chunk) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT destination, first_seq, count, chunk, expires_at, indexes, payloads "
                     "FROM outbox WHERE chunk=?1 ORDER BY destination, first_seq");
        Reset r{s};
        s.bind(1, chunk);
        std::vector<OutboxRow> out;
        while (s.step()) out.push_back(row(s));
        return out;
    }

    std::vector<DeadLetter> dead_letters(const std::string& destination) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT id, destination, seq, record_id, chunk, expires_at, dead_at, attempts, "
                     "error, payload, retry FROM dead_letters WHERE ?1='' OR destination=?1 ORDER BY id");
        Reset r{s};
        s.bind(1, destination);
        std::vector<DeadLetter> out;
        while (s.step()) out.push_back(dead(s));
        return out;
    }

    std::optional<DeadLetter> dead_letter(std::int64_t id) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT id, destination, seq, record_id, chunk, expires_at, dead_at, attempts, "
                     "error, payload, retry FROM dead_letters WHERE id=?1");
        Reset r{s};
        s.bind(1, id);
        if (!s.step()) return std::nullopt;
        return dead(s);
    }

    std::vector<DeadLetter> retry_requested(const std::string& destination) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT id, destination, seq, record_id, chunk, expires_at, dead_at, attempts, "
                     "error, payload, retry FROM dead_letters WHERE destination=?1 AND retry=1 "
                     "ORDER BY id LIMIT 64");
        Reset r{s};
        s.bind(1, destination);
        std::vector<DeadLetter> out;
        while (s.step()) out.push_back(dead(s));
        return out;
    }

    std::vector<std::uint64_t> dead_seqs_for_chunk(const std::string& destination,
                                                   std::int64_t chunk) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT seq FROM dead_letters WHERE destination=?1 AND chunk=?2");
        Reset r{s};
        s.bind(1, destination).bind(2, chunk);
        std::vector<std::uint64_t> out;
        while (s.step()) out.push_back(static_cast<std::uint64_t>(s.i64(0)));
        return out;
    }

    std::vector<QuarantineItem> quarantine(std::size_t limit) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT id, instance, ref, reason, received_at, expires_at, bytes FROM quarantine "
                     "ORDER BY id LIMIT ?1");
        Reset r{s};
        s.bind(1, static_cast<std::int64_t>(limit));
        std::vector<QuarantineItem> out;
        while (s.step())
            out.push_back({s.i64(0), s.text(1), s.text(2), s.text(3), s.i64(4), s.i64(5), s.bytes(6)});
        return out;
    }

    std::vector<EraseTask> erase_tasks(std::int64_t due_before, std::size_t limit) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT id, instance, target, reason, created_at, next_at, attempts, done, items, "
                     "last_error FROM erase_tasks WHERE next_at<=?1 ORDER BY next_at, id LIMIT ?2");
        Reset r{s};
        s.bind(1, due_before).bind(2, static_cast<std::int64_t>(limit));
        std::vector<EraseTask> out;
        while (s.step()) {
            EraseTask t;
            t.id = s.i64(0);
            t.instance = s.text(1);
            t.target = static_cast<EraseTarget>(s.i64(2));
            t.reason = static_cast<int>(s.i64(3));
            t.created_at = s.i64(4);
            t.next_at = s.i64(5);
            t.attempts = static_cast<std::uint32_t>(s.i64(6));
            t.done = static_cast<std::uint32_t>(s.i64(7));
            t.items = s.bytes(8);
            t.last_error = s.text(9);
            out.push_back(std::move(t));
        }
        return out;
    }

    std::vector<std::pair<std::uint64_t, std::string>> pending_audit() override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT last_seq, lines FROM audit_spool ORDER BY first_seq");
        Reset r{s};
        std::vector<std::pair<std::uint64_t, std::string>> out;
        while (s.step()) out.emplace_back(static_cast<std::uint64_t>(s.i64(0)), s.bytes(1));
        return out;
    }

    std::uint64_t count_outbox_pending(const std::string& destination) override {
        std::uint64_t acked_seq = acked(destination);
        std::uint64_t last = last_seq(destination);
        return last > acked_seq ? last - acked_seq : 0;
    }

    std::vector<Hold> holds(std::optional<std::int64_t> in_force_at) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT id, reason, set_by, set_at, until, sar, ended_at, ended_by, audited FROM holds h "
                     "WHERE ?2=0 OR (" SB_HOLD_IN_FORCE ") ORDER BY id");
        Reset r{s};
        s.bind(1, in_force_at.value_or(0)).bind(2, std::int64_t{in_force_at ? 1 : 0});
        std::vector<Hold> out;
        while (s.step()) out.push_back(hold_row(s));
        s.reset();
        for (auto& h : out) h.records = hold_record_ids(h.id);
        return out;
    }

    std::optional<Hold> hold(std::int64_t id) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT id, reason, set_by, set_at, until, sar, ended_at, ended_by, audited FROM holds "
                     "WHERE id=?1");
        Reset r{s};
        s.bind(1, id);
        if (!s.step()) return std::nullopt;
        Hold h = hold_row(s);
        s.reset();
        h.records = hold_record_ids(h.id);
        return h;
    }

    std::vector<HeldRecord> held_records(std::int64_t now) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT r.record_id, r.chunk, h.id, h.until FROM hold_records r JOIN holds h ON h.id=r.hold "
                     "WHERE " SB_HOLD_IN_FORCE " ORDER BY r.chunk, r.record_id, h.id");
        Reset r{s};
        s.bind(1, now);
        std::vector<HeldRecord> out;
        while (s.step()) out.push_back({s.text(0), s.i64(1), s.i64(2), s.i64(3)});
        return out;
    }

    bool holds_to_settle(std::int64_t now, std::int64_t purge_before) override {
        std::lock_guard lock(mutex_);
        Stmt& s = st("SELECT 1 FROM holds WHERE audited < CASE WHEN ended_at<>0 OR (until<>0 AND until<=?1) "
                     "THEN 2 ELSE 1 END OR (ended_at<>0 AND ended_at<?2 AND audited=2) LIMIT 1");
        Reset r{s};
        s.bind(1, now).bind(2, purge_before);
        return s.step();
    }

    std::vector<Erasure> pending_erasures(std::size_t limit) override {
        std::lock_guard lock(mutex_);
        auto out = erasure_rows("SELECT id, requested_by, requested_at, done_at FROM erasures WHERE done_at=0 "
                                "ORDER BY id LIMIT ?1",
                                static_cast<std::int64_t>(limit));
        for (auto& e : out) e.records = erasure_records(e.id);
        return out;
    }

    std::vector<Erasure> erasures(std::size_t limit) override {
        std::lock_guard lock(mutex_);
        return erasure_rows("SELECT id, requested_by, requested_at, done_at FROM erasures ORDER BY id DESC "
                            "LIMIT ?1",
                            static_cast<std::int64_t>(limit));
    }

    std::optional<Erasure> erasure(std::int64_t id) override {
        std::lock_guard lock(mutex_);
        auto out = erasure_rows("SELECT id, requested_by, requested_at, done_at FROM erasures WHERE id=?1", id);
        if (out.empty()) return std::nullopt;
        out[0].records = erasure_records(id);
        return out[0];
    }

    // For SqliteTxn: where a body goes, and what becomes of the old one.
    struct Place {
        std::int64_t seg = 0; // 0: in the row (an earlier version's chunk)
        std::uint64_t off = 0, len = 0;
        bool operator==(const Place&) const = default;
    };
    Place append_body(std::string_view body) { return append_body(std::vector<std::string_view>{body}); }
    Place append_body(const std::vector<std::string_view>& pieces) {
        if (!seg_.loaded) {
            std::uint64_t end = 0;
            std::optional<std::int64_t> seg = active_segment();
            if (auto v = meta("chunks.end")) end = std::stoull(*v);
            if (!seg) {
                Stmt& m = st("SELECT coalesce(max(seg), 0) FROM chunks");
                Reset r{m};
                m.step();
                seg = m.i64(0) + 1;
                end = 0;
            } else if (end >= segment_bytes_) {
                seg_.left = *seg; // may have no chunk left: see punch_holes()
                seg = *seg + 1;
                end = 0;
            }
            files_.open_for_append(*seg, end);
            seg_.loaded = true;
            seg_.seg = *seg;
            seg_.begin = seg_.end = seg_.started = end;
        }
        std::uint64_t size = 0;
        for (std::string_view piece : pieces) size += piece.size();
        Place p{seg_.seg, seg_.end, size};
        files_.write(seg_.seg, seg_.end, pieces);
        seg_.end += size;
        // Written back while the rest of the transaction is made, a
        // megabyte at a time: not per chunk, since a batch of records
        // expiring in many minutes makes many small chunks, and a
        // sync_file_range for each (a small write to the device each) cost
        // more than the rest of storing them.
        if (seg_.end - seg_.started >= kWritebackStep) {
            files_.start_writeback(seg_.seg, seg_.started, seg_.end - seg_.started);
            seg_.started = seg_.end;
        }
        seg_.appended = true;
        return p;
    }
    // The chunk's body is to be punched out once this transaction commits.
    void forget_body(std::int64_t id) {
        auto place = chunk_place(id);
        if (!place || place->seg == 0) return;
        st("INSERT INTO chunk_holes(seg, off, len) VALUES(?1, ?2, ?3)")
            .bind(1, place->seg)
            .bind(2, static_cast<std::int64_t>(place->off))
            .bind(3, static_cast<std::int64_t>(place->len))
            .run();
        seg_.holes.push_back({sqlite3_last_insert_rowid(db_), *place});
    }

    Stmt& st(const char* sql) {
        auto it = stmts_.find(sql);
        if (it == stmts_.end()) it = stmts_.emplace(sql, std::make_unique<Stmt>(db_, sql)).first;
        return *it->second;
    }
    sqlite3* db() { return db_; }

private:
    void exec(const char* sql) {
        char* err = nullptr;
        if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
            std::string msg = err ? err : "unknown error";
            sqlite3_free(err);
            throw StoreError(std::string("store: ") + msg);
        }
    }

    std::vector<ChunkInfo> chunk_list(const char* sql, std::int64_t t, std::size_t limit) {
        std::lock_guard lock(mutex_);
        Stmt& s = st(sql);
        Reset r{s};
        s.bind(1, t).bind(2, static_cast<std::int64_t>(limit));
        std::vector<ChunkInfo> out;
        while (s.step())
            out.push_back({s.i64(0), s.i64(1), s.i64(2), static_cast<std::uint32_t>(s.i64(3))});
        return out;
    }

    static OutboxRow row(Stmt& s) {
        OutboxRow r;
        r.destination = s.text(0);
        r.first_seq = static_cast<std::uint64_t>(s.i64(1));
        r.count = static_cast<std::uint32_t>(s.i64(2));
        r.chunk = s.i64(3);
        r.expires_at = s.i64(4);
        r.indexes = s.bytes(5);
        r.payloads = s.is_null(6) ? std::string() : s.bytes(6);
        return r;
    }

    static Hold hold_row(Stmt& s) {
        Hold h;
        h.id = s.i64(0);
        h.reason = s.text(1);
        h.set_by = s.text(2);
        h.set_at = s.i64(3);
        h.until = s.i64(4);
        h.sar = s.text(5);
        h.ended_at = s.i64(6);
        h.ended_by = s.text(7);
        h.audited = static_cast<int>(s.i64(8));
        return h;
    }

    std::vector<Erasure> erasure_rows(const char* sql, std::int64_t arg) {
        Stmt& s = st(sql);
        Reset r{s};
        s.bind(1, arg);
        std::vector<Erasure> out;
        while (s.step()) {
            Erasure e;
            e.id = s.i64(0);
            e.requested_by = s.text(1);
            e.requested_at = s.i64(2);
            e.done_at = s.i64(3);
            out.push_back(std::move(e));
        }
        return out;
    }

    std::vector<ErasureRecord> erasure_records(std::int64_t erasure) {
        Stmt& s = st("SELECT record_id, chunk, outcome, detail FROM erasure_records WHERE erasure=?1 "
                     "ORDER BY chunk, record_id");
        Reset r{s};
        s.bind(1, erasure);
        std::vector<ErasureRecord> out;
        while (s.step()) out.push_back({s.text(0), s.i64(1), s.text(2), s.text(3)});
        return out;
    }

    std::vector<std::string> hold_record_ids(std::int64_t hold) {
        Stmt& s = st("SELECT record_id FROM hold_records WHERE hold=?1 ORDER BY chunk, record_id");
        Reset r{s};
        s.bind(1, hold);
        std::vector<std::string> out;
        while (s.step()) out.push_back(s.text(0));
        return out;
    }

    static DeadLetter dead(Stmt& s) {
        DeadLetter d;
        d.id = s.i64(0);
        d.destination = s.text(1);
        d.seq = static_cast<std::uint64_t>(s.i64(2));
        d.record_id = s.text(3);
        d.chunk = s.i64(4);
        d.expires_at = s.i64(5);
        d.dead_at = s.i64(6);
        d.attempts = static_cast<std::uint32_t>(s.i64(7));
        d.error = s.text(8);
        d.payload = s.bytes(9);
        d.retry = s.i64(10) != 0;
        return d;
    }

    // The segment being appended to, once a body has been written.
    std::optional<std::int64_t> active_segment() {
        if (auto v = meta("chunks.segment")) return std::stoll(*v);
        return std::nullopt;
    }

    // Whether any chunk's body is in segment `seg`.
    bool segment_named(std::int64_t seg) {
        Stmt& s = st("SELECT 1 FROM chunks WHERE seg=?1 LIMIT 1");
        Reset r{s};
        s.bind(1, seg);
        return s.step();
    }

    std::optional<Place> chunk_place(std::int64_t id) {
        Stmt& s = st("SELECT seg, off, len FROM chunks WHERE id=?1");
        Reset r{s};
        s.bind(1, id);
        if (!s.step()) return std::nullopt;
        if (s.is_null(0)) return Place{};
        return Place{s.i64(0), static_cast<std::uint64_t>(s.i64(1)), static_cast<std::uint64_t>(s.i64(2))};
    }

    // Segment files that no chunk of the journal names, but the one being
    // appended to, are removed when the store is opened: a database removed
    // or replaced without its segments (they would never expire), or a
    // segment begun by a transaction that did not commit. Looked at under the
    // write lock, so that no other process is in the middle of writing one.
    void remove_orphan_segments() {
        auto orphans = [&] {
            std::vector<std::int64_t> out;
            std::error_code ec;
            if (!std::filesystem::is_directory(files_.dir(), ec)) return out;
            const auto active = active_segment();
            for (const auto& e : std::filesystem::directory_iterator(files_.dir(), ec)) {
                const std::string name = e.path().filename().string();
                if (name.size() != 12 || !name.ends_with(".seg") ||
                    name.find_first_not_of("0123456789") != 8)
                    continue;
                const std::int64_t seg = std::stoll(name.substr(0, 8));
                if (seg != active && !segment_named(seg)) out.push_back(seg);
            }
            return out;
        };
        if (orphans().empty()) return; // the usual case: no lock taken
        exec("BEGIN IMMEDIATE");
        try {
            for (std::int64_t seg : orphans()) files_.remove(seg);
            exec("COMMIT");
        } catch (...) {
            sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
            throw;
        }
    }

    // A journal made before chunk bodies moved to files gains the columns.
    void migrate_chunks() {
        auto has_seg = [&] {
            Stmt s(db_, "SELECT 1 FROM pragma_table_info('chunks') WHERE name='seg'");
            return s.step();
        };
        if (has_seg()) return;
        exec("BEGIN IMMEDIATE");
        try {
            if (!has_seg())
                exec("ALTER TABLE chunks ADD COLUMN seg INTEGER; ALTER TABLE chunks ADD COLUMN off INTEGER; "
                     "ALTER TABLE chunks ADD COLUMN len INTEGER;");
            exec("COMMIT");
        } catch (...) {
            sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
            throw;
        }
    }

    // At the start of a write: ranges listed to be punched that were not
    // (a crash, or a failure, after their commit; or another process's), and
    // the list emptied.
    void settle_holes() {
        Stmt& s = st("SELECT rowid, seg, off, len FROM chunk_holes");
        std::vector<Place> left;
        bool any = false;
        {
            Reset r{s};
            while (s.step()) {
                any = true;
                if (!punched_.count(s.i64(0)))
                    left.push_back({s.i64(1), static_cast<std::uint64_t>(s.i64(2)),
                                    static_cast<std::uint64_t>(s.i64(3))});
            }
        }
        punched_.clear();
        if (!any) return;
        punch(left); // throws, and the write with it, if the file system refuses
        exec("DELETE FROM chunk_holes");
    }

    // After a commit: its deleted bodies punched out, and a segment none of
    // whose chunks is left removed. A failure leaves them listed for the
    // next write, which says why if it fails again.
    void punch_holes() noexcept {
        std::vector<Place> holes;
        for (const auto& h : seg_.holes) holes.push_back(h.place);
        if (seg_.left) holes.push_back({seg_.left, 0, 0});
        try {
            punch(holes);
            for (const auto& h : seg_.holes) punched_.insert(h.rowid);
        } catch (const StoreError&) {
        }
        seg_ = SegmentTxn{};
    }

    void punch(const std::vector<Place>& holes) {
        std::set<std::int64_t> segs;
        for (const Place& h : holes) {
            files_.punch(h.seg, h.off, h.len);
            segs.insert(h.seg);
        }
        const auto active = active_segment();
        for (std::int64_t seg : segs) {
            if (seg != active && !segment_named(seg))
                files_.remove(seg);
            else if (std::filesystem::exists(files_.path(seg)))
                files_.sync(seg); // the zeros, on disk
        }
    }

    // The segment work of the write transaction in progress.
    struct Hole {
        std::int64_t rowid;
        Place place;
    };
    struct SegmentTxn {
        bool loaded = false, appended = false;
        std::int64_t seg = 0;  // appending to
        std::uint64_t begin = 0, end = 0; // of what is written
        std::uint64_t started = 0;        // written back from begin up to here (kWritebackStep)
        std::int64_t left = 0; // the segment before, when this one began here
        std::vector<Hole> holes;
    };

    static constexpr std::uint64_t kWritebackStep = 1u << 20;

    sqlite3* db_ = nullptr;
    std::recursive_mutex mutex_; // reads may happen inside a write transaction
    std::map<const char*, std::unique_ptr<Stmt>> stmts_;
    ChunkFiles files_;
    const std::uint64_t segment_bytes_;
    SegmentTxn seg_;
    std::set<std::int64_t> punched_; // chunk_holes rows punched since their commit
};

bool SqliteTxn::claim(std::uint64_t key_hash, std::int64_t expires_at) {
    Stmt& s = s_.st("INSERT OR IGNORE INTO claims(hash, expires_at) VALUES(?1, ?2)");
    s.bind(1, static_cast<std::int64_t>(key_hash)).bind(2, expires_at).run();
    return sqlite3_changes(s_.db()) == 1;
}

std::int64_t SqliteTxn::next_chunk_id() {
    // Chunk ids are never reused, even after the newest chunk is deleted:
    // record ids derive from them and appear in the audit trail.
    Stmt& s = s_.st("SELECT value FROM meta WHERE key='next_chunk'");
    std::int64_t next = 1;
    if (s.step()) next = std::stoll(s.text(0));
    s.reset();
    set_meta("next_chunk", std::to_string(next + 1));
    return next;
}

void SqliteTxn::put_chunk(const ChunkInfo& info, std::string_view body) {
    put_chunk(info, std::vector<std::string_view>{body});
}

void SqliteTxn::put_chunk(const ChunkInfo& info, const std::vector<std::string_view>& pieces) {
    const auto place = s_.append_body(pieces);
    s_.st("INSERT INTO chunks(id, created_at, expires_at, count, body, seg, off, len) "
          "VALUES(?1, ?2, ?3, ?4, X'', ?5, ?6, ?7)")
        .bind(1, info.id)
        .bind(2, info.created_at)
        .bind(3, info.expires_at)
        .bind(4, static_cast<std::int64_t>(info.count))
        .bind(5, place.seg)
        .bind(6, static_cast<std::int64_t>(place.off))
        .bind(7, static_cast<std::int64_t>(place.len))
        .run();
}

void SqliteTxn::replace_chunk_body(std::int64_t id, std::string_view body) {
    s_.forget_body(id);
    const auto place = s_.append_body(body);
    // An earlier version's body in the row is overwritten (secure_delete).
    s_.st("UPDATE chunks SET body=X'', seg=?2, off=?3, len=?4 WHERE id=?1")
        .bind(1, id)
        .bind(2, place.seg)
        .bind(3, static_cast<std::int64_t>(place.off))
        .bind(4, static_cast<std::int64_t>(place.len))
        .run();
}

void SqliteTxn::delete_chunk(std::int64_t id) {
    s_.forget_body(id);
    s_.st("DELETE FROM chunks WHERE id=?1").bind(1, id).run();
}

void SqliteTxn::put_outbox(const OutboxRow& row) {
    s_.st("INSERT INTO outbox(destination, first_seq, count, chunk, expires_at, indexes, payloads) "
          "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)")
        .bind(1, row.destination)
        .bind(2, static_cast<std::int64_t>(row.first_seq))
        .bind(3, static_cast<std::int64_t>(row.count))
        .bind(4, row.chunk)
        .bind(5, row.expires_at)
        .blob(6, row.indexes)
        .blob(7, row.payloads)
        .run();
    set_meta("last_seq." + row.destination, std::to_string(row.first_seq + row.count - 1));
}

void SqliteTxn::set_acked(const std::string& destination, std::uint64_t acked_seq) {
    // Rows wholly at or below the previous progress had their payloads
    // dropped then: start from the row holding the first seq after it, so
    // that each call costs what it acknowledges, not every row kept.
    std::int64_t previous = 0;
    {
        Stmt& p = s_.st("SELECT acked FROM progress WHERE destination=?1");
        Reset r{p};
        p.bind(1, destination);
        if (p.step()) previous = p.i64(0);
    }
    if (previous > static_cast<std::int64_t>(acked_seq)) previous = 0; // never expected: look at all
    s_.st("INSERT INTO progress(destination, acked) VALUES(?1, ?2) "
          "ON CONFLICT(destination) DO UPDATE SET acked=excluded.acked")
        .bind(1, destination)
        .bind(2, static_cast<std::int64_t>(acked_seq))
        .run();
    s_.st("UPDATE outbox SET payloads=NULL WHERE destination=?1 AND first_seq <= ?2 "
          "AND first_seq + count - 1 <= ?2 AND payloads IS NOT NULL "
          "AND first_seq >= coalesce((SELECT max(first_seq) FROM outbox "
          "WHERE destination=?1 AND first_seq <= ?3), 0)")
        .bind(1, destination)
        .bind(2, static_cast<std::int64_t>(acked_seq))
        .bind(3, previous + 1)
        .run();
}

void SqliteTxn::delete_outbox_for_chunk(std::int64_t chunk) {
    s_.st("DELETE FROM outbox WHERE chunk=?1").bind(1, chunk).run();
}

void SqliteTxn::put_dead_letter(const DeadLetter& d) {
    s_.st("INSERT INTO dead_letters(destination, seq, record_id, chunk, expires_at, dead_at, attempts, "
          "error, payload) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
        .bind(1, d.destination)
        .bind(2, static_cast<std::int64_t>(d.seq))
        .bind(3, d.record_id)
        .bind(4, d.chunk)
        .bind(5, d.expires_at)
        .bind(6, d.dead_at)
        .bind(7, static_cast<std::int64_t>(d.attempts))
        .bind(8, d.error)
        .blob(9, d.payload)
        .run();
}

void SqliteTxn::delete_dead_letter(std::int64_t id) {
    s_.st("DELETE FROM dead_letters WHERE id=?1").bind(1, id).run();
}

bool SqliteTxn::request_retry(std::int64_t id) {
    s_.st("UPDATE dead_letters SET retry=1 WHERE id=?1").bind(1, id).run();
    return sqlite3_changes(s_.db()) == 1;
}

void SqliteTxn::update_dead_letter(std::int64_t id, std::uint32_t attempts, const std::string& error) {
    s_.st("UPDATE dead_letters SET retry=0, attempts=?2, error=?3 WHERE id=?1")
        .bind(1, id)
        .bind(2, static_cast<std::int64_t>(attempts))
        .bind(3, error)
        .run();
}

void SqliteTxn::delete_dead_letters_for_chunk(std::int64_t chunk) {
    s_.st("DELETE FROM dead_letters WHERE chunk=?1").bind(1, chunk).run();
}

void SqliteTxn::set_state(const std::string& instance, const std::string& key,
                          const std::optional<std::string>& value) {
    if (value)
        s_.st("INSERT INTO state(instance, key, value) VALUES(?1, ?2, ?3) "
              "ON CONFLICT(instance, key) DO UPDATE SET value=excluded.value")
            .bind(1, instance)
            .bind(2, key)
            .bind(3, *value)
            .run();
    else
        s_.st("DELETE FROM state WHERE instance=?1 AND key=?2").bind(1, instance).bind(2, key).run();
}

void SqliteTxn::put_quarantine(const QuarantineItem& q) {
    s_.st("INSERT INTO quarantine(instance, ref, reason, received_at, expires_at, bytes) "
          "VALUES(?1, ?2, ?3, ?4, ?5, ?6)")
        .bind(1, q.instance)
        .bind(2, q.ref)
        .bind(3, q.reason)
        .bind(4, q.received_at)
        .bind(5, q.expires_at)
        .blob(6, q.bytes)
        .run();
}

void SqliteTxn::put_erase_task(const EraseTask& t) {
    s_.st("INSERT INTO erase_tasks(instance, target, reason, created_at, next_at, attempts, done, items, "
          "last_error) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
        .bind(1, t.instance)
        .bind(2, static_cast<std::int64_t>(t.target))
        .bind(3, static_cast<std::int64_t>(t.reason))
        .bind(4, t.created_at)
        .bind(5, t.next_at)
        .bind(6, static_cast<std::int64_t>(t.attempts))
        .bind(7, static_cast<std::int64_t>(t.done))
        .blob(8, t.items)
        .bind(9, t.last_error)
        .run();
}

void SqliteTxn::update_erase_task(const EraseTask& t) {
    s_.st("UPDATE erase_tasks SET next_at=?2, attempts=?3, done=?4, last_error=?5 WHERE id=?1")
        .bind(1, t.id)
        .bind(2, t.next_at)
        .bind(3, static_cast<std::int64_t>(t.attempts))
        .bind(4, static_cast<std::int64_t>(t.done))
        .bind(5, t.last_error)
        .run();
}

void SqliteTxn::delete_erase_task(std::int64_t id) {
    s_.st("DELETE FROM erase_tasks WHERE id=?1").bind(1, id).run();
}

void SqliteTxn::delete_audit_upto(std::uint64_t last_seq) {
    s_.st("DELETE FROM audit_spool WHERE last_seq<=?1").bind(1, static_cast<std::int64_t>(last_seq)).run();
}

void SqliteTxn::set_meta(const std::string& key, const std::string& value) {
    s_.st("INSERT INTO meta(key, value) VALUES(?1, ?2) "
          "ON CONFLICT(key) DO UPDATE SET value=excluded.value")
        .bind(1, key)
        .bind(2, value)
        .run();
}

std::uint64_t SqliteTxn::expire_quarantine(std::int64_t now) {
    s_.st("DELETE FROM quarantine WHERE expires_at<=?1").bind(1, now).run();
    return static_cast<std::uint64_t>(sqlite3_changes(s_.db()));
}

std::uint64_t SqliteTxn::expire_claims(std::int64_t now) {
    s_.st("DELETE FROM claims WHERE expires_at<=?1").bind(1, now).run();
    return static_cast<std::uint64_t>(sqlite3_changes(s_.db()));
}

std::int64_t SqliteTxn::put_hold(const Hold& h, const std::vector<std::int64_t>& chunks) {
    if (chunks.size() != h.records.size()) throw StoreError("put_hold: one chunk per record expected");
    s_.st("INSERT INTO holds(reason, set_by, set_at, until, sar) VALUES(?1, ?2, ?3, ?4, ?5)")
        .bind(1, h.reason)
        .bind(2, h.set_by)
        .bind(3, h.set_at)
        .bind(4, h.until)
        .bind(5, h.sar)
        .run();
    std::int64_t id = sqlite3_last_insert_rowid(s_.db());
    for (std::size_t i = 0; i < chunks.size(); ++i)
        s_.st("INSERT OR IGNORE INTO hold_records(hold, chunk, record_id) VALUES(?1, ?2, ?3)")
            .bind(1, id)
            .bind(2, chunks[i])
            .bind(3, h.records[i])
            .run();
    return id;
}

bool SqliteTxn::end_hold(std::int64_t id, std::int64_t at, const std::string& by) {
    s_.st("UPDATE holds SET ended_at=?2, ended_by=?3 WHERE id=?1 AND ended_at=0")
        .bind(1, id)
        .bind(2, at)
        .bind(3, by)
        .run();
    return sqlite3_changes(s_.db()) == 1;
}

void SqliteTxn::set_hold_audited(std::int64_t id, int audited) {
    s_.st("UPDATE holds SET audited=?2 WHERE id=?1").bind(1, id).bind(2, std::int64_t{audited}).run();
}

std::uint64_t SqliteTxn::purge_holds(std::int64_t ended_before) {
    s_.st("DELETE FROM hold_records WHERE hold IN (SELECT id FROM holds WHERE ended_at<>0 AND ended_at<?1 "
          "AND audited=2)")
        .bind(1, ended_before)
        .run();
    s_.st("DELETE FROM holds WHERE ended_at<>0 AND ended_at<?1 AND audited=2").bind(1, ended_before).run();
    return static_cast<std::uint64_t>(sqlite3_changes(s_.db()));
}

void SqliteTxn::replace_outbox_payloads(const std::string& destination, std::uint64_t first_seq,
                                        std::string_view payloads) {
    // A row whose payloads were dropped meanwhile (all of it acknowledged)
    // keeps none: delivered copies must not come back.
    s_.st("UPDATE outbox SET payloads=?3 WHERE destination=?1 AND first_seq=?2 AND payloads IS NOT NULL")
        .bind(1, destination)
        .bind(2, static_cast<std::int64_t>(first_seq))
        .blob(3, payloads)
        .run();
}

std::int64_t SqliteTxn::put_erasure(const Erasure& e) {
    s_.st("INSERT INTO erasures(requested_by, requested_at) VALUES(?1, ?2)")
        .bind(1, e.requested_by)
        .bind(2, e.requested_at)
        .run();
    std::int64_t id = sqlite3_last_insert_rowid(s_.db());
    for (const auto& r : e.records)
        s_.st("INSERT OR IGNORE INTO erasure_records(erasure, record_id, chunk) VALUES(?1, ?2, ?3)")
            .bind(1, id)
            .bind(2, r.record_id)
            .bind(3, r.chunk)
            .run();
    return id;
}

void SqliteTxn::finish_erasure(const Erasure& e, std::int64_t done_at) {
    for (const auto& r : e.records)
        s_.st("UPDATE erasure_records SET outcome=?3, detail=?4 WHERE erasure=?1 AND record_id=?2")
            .bind(1, e.id)
            .bind(2, r.record_id)
            .bind(3, r.outcome)
            .bind(4, r.detail)
            .run();
    s_.st("UPDATE erasures SET done_at=?2 WHERE id=?1").bind(1, e.id).bind(2, done_at).run();
}

std::uint64_t SqliteTxn::purge_erasures(std::int64_t done_before) {
    s_.st("DELETE FROM erasure_records WHERE erasure IN (SELECT id FROM erasures WHERE done_at<>0 AND "
          "done_at<?1)")
        .bind(1, done_before)
        .run();
    s_.st("DELETE FROM erasures WHERE done_at<>0 AND done_at<?1").bind(1, done_before).run();
    return static_cast<std::uint64_t>(sqlite3_changes(s_.db()));
}

} // namespace

void encode_items(const std::vector<EraseItem>& items, std::string& out) {
    put_varint(out, items.size());
    for (const auto& i : items) {
        put_string(out, i.record_id);
        put_string(out, i.external_id);
        put_string(out, i.subject_ref);
        put_string(out, i.channel);
    }
}

bool decode_items(std::string_view in, std::vector<EraseItem>& items) {
    std::size_t pos = 0;
    std::uint64_t n;
    if (!get_varint(in, pos, n) || n > in.size()) return false;
    items.clear();
    for (std::uint64_t k = 0; k < n; ++k) {
        std::string_view a, b, c, d;
        if (!get_string(in, pos, a) || !get_string(in, pos, b) || !get_string(in, pos, c) ||
            !get_string(in, pos, d))
            return false;
        items.push_back({std::string(a), std::string(b), std::string(c), std::string(d)});
    }
    return pos == in.size();
}

std::unique_ptr<Store> open_sqlite(const std::string& file, std::uint64_t segment_bytes) {
    return std::make_unique<SqliteStore>(file, segment_bytes);
}

} // namespace switchboard::store
