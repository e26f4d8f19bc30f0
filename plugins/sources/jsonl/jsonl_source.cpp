// jsonl-source: records from JSON lines, one record per line, read from a
// file, a directory of files (in name order) or standard input.
//
// Exactly once across crashes: the read position (file, inode, byte offset,
// line number) is committed in the same durable commit as the records read
// before it (emit_batch with the state key "cursor"). If the commit fails the
// position stays where it was and the same lines are read again.
//
// Reading is buffered (1 MiB read() blocks, lines found with memchr); a line
// is parsed straight from the buffer into a host record by the SDK's JSON
// record reader. With `read_ahead` (the default) a full batch is handed to
// the journal with emit_begin (ABI 1.3) and poll() reads and hands over the
// next one while it commits; the host commits a batch only if the one begun
// before it committed, so a failed commit still rewinds exactly to the first
// line not committed. Lines that cannot be used go to the quarantine with a reason
// naming their line number; their content is never logged.
//
// With `watch` (the default) new lines are read as soon as they are written:
// a poll that finds nothing waits for the input to change (inotify on the
// directory, or on the file's directory; poll() on standard input) for at
// most kWatchWaitMs, then asks to be called again at once. Without it, or
// where inotify is not available, the host calls every poll_interval.
#include <switchboard/detail/json_record.hpp>
#include <switchboard/plugin.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

constexpr std::size_t kReadBlock = 1 << 20;        // bytes per read()
constexpr std::size_t kMaxBatchBytes = 16u << 20;  // a batch stops growing here
constexpr std::size_t kQuarantineHead = 64u << 10; // bytes kept of an oversized line
constexpr int kLogsPerPoll = 20;                   // quarantine log lines per poll

std::string os_error() { return std::strerror(errno); }

// Where reading stands: committed with the records as the state "cursor".
struct Cursor {
    std::string name; // file name within the directory, or the input file's name
    std::uint64_t dev = 0, ino = 0;
    std::uint64_t offset = 0; // byte offset of the next line
    std::uint64_t line = 1;   // its line number

    // "1 <dev> <ino> <offset> <line> <name>"; the name comes last so that it
    // may hold spaces.
    std::string text() const {
        return "1 " + std::to_string(dev) + " " + std::to_string(ino) + " " +
               std::to_string(offset) + " " + std::to_string(line) + " " + name;
    }
    static std::optional<Cursor> parse(std::string_view s) {
        Cursor c;
        std::uint64_t* fields[] = {nullptr, &c.dev, &c.ino, &c.offset, &c.line};
        for (int k = 0; k < 5; ++k) {
            std::size_t sp = s.find(' ');
            if (sp == std::string_view::npos) return std::nullopt;
            std::uint64_t v = 0;
            auto r = std::from_chars(s.data(), s.data() + sp, v);
            if (r.ec != std::errc() || r.ptr != s.data() + sp) return std::nullopt;
            if (k == 0 && v != 1) return std::nullopt; // a format this build does not know
            if (k > 0) *fields[k] = v;
            s.remove_prefix(sp + 1);
        }
        if (c.line == 0) return std::nullopt;
        c.name = std::string(s);
        return c;
    }
};

class JsonlSource : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "jsonl-source";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "Records from JSON lines: a file, a directory of files, or standard input";
        i.kind = SB_KIND_SOURCE;
        i.config = {
            sb::Field::path("path").required().describe(
                "Input: a file, a directory of files (read in name order), or \"-\" for "
                "standard input"),
            sb::Field::string("pattern").fallback("\"*.jsonl\"").describe(
                "Directory mode: which file names to read (shell glob; dot files never match)"),
            sb::Field::string("format").choices({"record", "flat"}).fallback("\"record\"").describe(
                "record: Switchboard record format per line; flat: each line is the field tree"),
            sb::Field::string("categories").multi().describe(
                "\"pattern=category\" rules: the categories of flat lines, and of record lines "
                "that carry none"),
            sb::Field::string("channel").fallback("\"batch\"").describe(
                "Channel of records whose line does not name one"),
            sb::Field::string("external_id_field").describe(
                "Flat format: the field path whose value becomes the record's external_id"),
            sb::Field::string("occurred_at_field").describe(
                "Flat format: the field path whose RFC 3339 value becomes occurred_at"),
            sb::Field::integer("batch").range(1, 65536).fallback("512").describe(
                "Lines committed together"),
            sb::Field::boolean("read_ahead").fallback("true").describe(
                "Read the next batch while a full one commits; false: one batch per poll"),
            sb::Field::size("max_line").range(64, 256.0 * 1024 * 1024).fallback("\"1MiB\"").describe(
                "Longest line accepted; longer ones are skipped and quarantined (truncated)"),
            sb::Field::boolean("watch").fallback("true").describe(
                "Read new lines as soon as they are written (inotify; poll() on standard input), "
                "not a poll_interval later"),
        };
        return i;
    }

    explicit JsonlSource(sb::Host host)
        : sb::Plugin(host),
          path_(host.string("path")),
          pattern_(host.string("pattern")),
          flat_(host.string("format") == "flat"),
          channel_(host.string("channel")),
          external_id_field_(host.string_opt("external_id_field").value_or("")),
          occurred_at_field_(host.string_opt("occurred_at_field").value_or("")),
          batch_(static_cast<std::size_t>(host.integer("batch"))),
          read_ahead_(host.boolean("read_ahead")),
          max_line_(static_cast<std::size_t>(host.integer("max_line"))),
          watch_(host.boolean("watch")) {
        std::string why;
        auto cats = sb::detail::CategoryMap::from_list(host.list("categories"), why);
        if (!cats) throw sb::Error(SB_ERR_INVALID, "config key 'categories': " + why);
        categories_ = std::move(*cats);
        std::vector<sb::detail::PathSegment> segs;
        for (const auto* f : {&external_id_field_, &occurred_at_field_})
            if (!f->empty() && !sb::detail::parse_path(*f, segs))
                throw sb::Error(SB_ERR_INVALID, "config keys external_id_field and "
                                                "occurred_at_field must be field paths");
        if (pattern_.empty()) throw sb::Error(SB_ERR_INVALID, "config key 'pattern' is empty");
        if (channel_.empty()) throw sb::Error(SB_ERR_INVALID, "config key 'channel' is empty");

        // "-" is standard input. The core resolves relative paths against the
        // config file's directory, so "-" may arrive as "<dir>/-".
        std::string_view p(path_);
        if (p == "-" || (p.size() >= 2 && p.substr(p.size() - 2) == "/-"))
            mode_ = Mode::Stdin;
        else if (is_directory(path_))
            mode_ = Mode::Directory;

        if (auto saved = host.state("cursor")) {
            auto c = Cursor::parse(*saved);
            if (!c) throw sb::Error(SB_ERR_INTERNAL, "stored state 'cursor' is not readable");
            committed_ = *c;
        }
        flat_options_.categories = &categories_;
        flat_options_.external_id_field = external_id_field_;
        flat_options_.occurred_at_field = occurred_at_field_;
        sorted_options_ = flat_options_;
        sorted_options_.categories = nullptr; // SortingSink finds them
        sorting_.emplace(host.api(), &categories_);
        record_options_.fallback = categories_.empty() ? nullptr : &categories_;
    }

    ~JsonlSource() override {
        close_input();
        close_watch();
    }

    void start() {
        const char* mode = mode_ == Mode::Stdin ? "standard input" : mode_ == Mode::Directory
                                                                       ? "directory"
                                                                       : "file";
        std::string where = mode_ == Mode::Stdin ? "" : " " + path_;
        std::string resume = committed_.name.empty()
                                 ? "from the start"
                                 : "at line " + std::to_string(committed_.line) + " of " +
                                       committed_.name;
        host().info(std::string("reading ") + mode + where + " (" + (flat_ ? "flat" : "record") +
                    " format), " + resume);
        if (mode_ != Mode::Stdin && !flat_ &&
            (!external_id_field_.empty() || !occurred_at_field_.empty()))
            host().warn("external_id_field and occurred_at_field apply to the flat format only");
    }

    // Reads one batch; when there was nothing new and `watch` is on, waits
    // (bounded) for the input to change and asks to be called again at once.
    sb::Status poll() {
        // Changes so far are seen by the read below: only later ones wake the wait.
        if (inotify_ >= 0) drain_events();
        sb::Status s = read_batch();
        if (s != SB_IDLE || !watch_) return s;
        return wait_for_change() ? SB_OK : SB_IDLE;
    }

    // Reads one batch, or with read_ahead several: while a full batch
    // commits, the next is read and begun; at most kReadAheadMs of them per
    // poll. Returns with nothing in flight. SB_OK when it made progress
    // (records committed, or lines quarantined or skipped), SB_IDLE when
    // there was nothing new.
    sb::Status read_batch() {
        logs_this_poll_ = 0;
        if (!ensure_input()) return SB_IDLE;
        struct CountLines { // also when poll leaves by an exception
            JsonlSource& self;
            ~CountLines() {
                if (self.lines_taken_) self.host().count("lines_read", self.lines_taken_);
                self.lines_taken_ = 0;
            }
        } count_lines{*this};

        const bool ahead = read_ahead_ && host().can_emit_ahead();
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(kReadAheadMs);
        std::unique_ptr<Batch> flying, b; // begun and not waited for; being read
        bool committed = false;
        try {
            for (;;) {
                b = std::make_unique<Batch>();
                read_lines(*b, flying != nullptr);
                b->count = b->records.size();
                if (b->count) {
                    b->end = here();
                    b->cursor = b->end.text();
                    b->state_key = mode_ == Mode::Stdin ? nullptr : "cursor";
                    if (ahead) begin(*b); // commits only if `flying` does
                }
                if (flying) {
                    std::unique_ptr<Batch> done = std::move(flying);
                    finish(*done);
                    if (!settle(*done)) {
                        finish(*b); // not committed either: dropped, read again
                        fail(*done);
                    }
                    committed = true;
                    if (b->held) { // read on, now with nothing in flight
                        if (b->progress) commit_position();
                        continue;
                    }
                }
                if (!b->count) {
                    if (b->progress) commit_position();
                    return b->progress || committed ? SB_OK : SB_IDLE;
                }
                if (b->begun && b->full && std::chrono::steady_clock::now() < until) {
                    flying = std::move(b);
                    continue;
                }
                if (b->begun)
                    finish(*b);
                else if (!ahead)
                    commit_now(*b);
                if (!settle(*b)) fail(*b); // (also when emit_begin refused it)
                return SB_OK;
            }
        } catch (...) {
            // Whatever was read and not committed is read again next time;
            // every batch begun is waited for, in order.
            bool ok = true;
            for (Batch* x : {flying.get(), b.get()}) {
                if (!x || !x->begun || x->waited) continue;
                finish(*x);
                ok = ok && settle(*x);
            }
            if (!skipping_) {
                pos_ = scan_ = mark_;
                line_no_ = mark_line_;
            }
            throw;
        }
    }

    sb::Status erase(const sb::EraseRequest& req) {
        // The input files are the operator's batch import: deleting them after
        // the import is the operator's job (see README). Nothing is held here.
        host().count("erase_requests");
        host().debug("erase for record " + std::string(req.record_id) +
                     ": nothing held by this source");
        return SB_OK;
    }

private:
    enum class Mode { File, Directory, Stdin };
    struct LineRef {
        std::uint64_t at; // input offset (the buffer may be compacted meanwhile)
        std::size_t len;
        std::uint64_t line;
    };

    // Lines read and committed as one.
    struct Batch {
        std::vector<sb::Record> records;
        std::vector<LineRef> refs;         // the records' lines
        std::uint64_t start = 0;           // input offset of its first line: where a failed commit rewinds to
        std::uint64_t start_line = 1;      // and that line's number
        bool progress = false;             // lines taken, a line skipped or a file begun
        bool full = false;                 // stopped because it was full: more may be waiting
        bool held = false;                 // stopped before a step that needs nothing in flight
        Cursor end;                        // where reading stands after it
        std::string cursor;                // end.text(), committed with it
        const char* state_key = nullptr;   // "cursor", or none (standard input)
        std::size_t count = 0;             // records read (and handed to the commit)
        bool begun = false;                // and gave `ticket`
        bool waited = false;               // emit_wait was called
        std::uint64_t ticket = 0;
        sb::Status status = SB_ERR_UNAVAILABLE; // the commit's
        std::vector<sb::Status> results;   // per record
    };

    // Reads lines into `b` until it is full or nothing more is there now.
    // With a batch `in_flight` the mark stays at that batch's start, so a
    // step that moves it (skipping an oversized line, moving to the next
    // file) is not taken: the batch stops short, `held`.
    void read_lines(Batch& b, bool in_flight) {
        auto restart = [&] { // everything before is committed (or needs no commit)
            set_mark();
            b.start = base_ + pos_;
            b.start_line = line_no_;
        };
        if (in_flight) {
            b.start = base_ + pos_;
            b.start_line = line_no_;
        } else {
            restart();
        }
        b.records.reserve(std::min<std::size_t>(batch_, 4096));
        auto bytes = [&] { return base_ + pos_ - b.start; };
        while (b.records.size() < batch_ && bytes() < kMaxBatchBytes) {
            if (skipping_) {
                if (in_flight) {
                    b.held = true;
                    break;
                }
                if (!skip_oversized()) break;
                b.progress = true;
                commit_position(); // the skipped bytes are gone from the buffer
                restart();
                continue;
            }
            const char* base = buf_.get();
            std::size_t from = std::max(pos_, scan_);
            const void* nl = from < len_ ? std::memchr(base + from, '\n', len_ - from) : nullptr;
            if (nl) {
                std::size_t end = static_cast<std::size_t>(static_cast<const char*>(nl) - base);
                take_line(end, end + 1, b.records, b.refs);
                b.progress = true;
                continue;
            }
            scan_ = len_;
            if (len_ - pos_ > max_line_) {
                // A line longer than max_line and no end in sight: commit what
                // came before, then skip it without holding it in memory.
                if (!b.records.empty()) break;
                if (in_flight) {
                    b.held = true;
                    break;
                }
                start_skip();
                continue;
            }
            long got = fill();
            if (got > 0) continue;
            if (got < 0) break;
            // Nothing more to read now.
            if (len_ > pos_ && tail_is_final()) {
                take_line(len_, len_, b.records, b.refs);
                b.progress = true;
                continue;
            }
            if (mode_ == Mode::Directory && len_ == pos_ && b.records.empty()) {
                if (in_flight) {
                    b.held = true;
                    break;
                }
                if (next_file()) {
                    b.progress = true;
                    restart();
                    continue;
                }
            }
            break;
        }
        b.full = b.records.size() >= batch_ || bytes() >= kMaxBatchBytes;
    }

    // Hands `b` to the journal to commit while the next batch is read
    // (emit_begin); finish() waits for it.
    void begin(Batch& b) {
        b.status = host().emit_begin(b.records, b.state_key, b.state_key ? b.cursor.c_str() : nullptr,
                                     b.ticket);
        b.begun = b.status == SB_OK;
    }
    void finish(Batch& b) {
        if (!b.begun || b.waited) return;
        b.waited = true;
        b.status = host().emit_wait(b.ticket, &b.results, b.count);
    }
    // The commit of `b` in one call (emit_batch).
    void commit_now(Batch& b) {
        b.status = host().emit_batch(b.records, b.state_key, b.state_key ? b.cursor.c_str() : nullptr,
                                     &b.results);
    }

    // After b's commit, here. Committed: reading stands past it, and the
    // records the host refused go to the quarantine; true. Not: reading goes
    // back to its first line, to read it again; false.
    bool settle(Batch& b) {
        if (b.status != SB_OK) {
            host().count("emit_unavailable");
            skipping_ = false;
            pos_ = scan_ = mark_ = static_cast<std::size_t>(b.start - base_);
            line_no_ = mark_line_ = b.start_line;
            return false;
        }
        committed_ = b.end;
        // Everything up to its end is committed.
        mark_ = static_cast<std::size_t>(b.end.offset - base_);
        mark_line_ = b.end.line;
        std::uint64_t ok = 0, dup = 0;
        for (std::size_t k = 0; k < b.count && k < b.results.size(); ++k) {
            if (b.results[k] == SB_OK) {
                ++ok;
            } else if (b.results[k] == SB_DUPLICATE) {
                ++dup;
            } else {
                // Committed past it, so it is kept in the quarantine instead.
                host().count("records_refused");
                // The commit moved past it, so it is never read again: no de-dup.
                const LineRef& r = b.refs[k];
                quarantine(std::string_view(buf_.get() + (r.at - base_), r.len), r.line,
                           std::string("refused by the host (") + sb::status_name(b.results[k]) + ")",
                           true);
            }
        }
        if (ok) host().count("records_emitted", ok);
        if (dup) host().count("records_duplicate", dup);
        return true;
    }

    // A commit that did not happen (settle() has rewound): the host logs it
    // and polls again.
    [[noreturn]] void fail(const Batch& b) {
        throw sb::Error(b.status, "journal did not commit " + std::to_string(b.count) +
                            " record(s); they will be read again");
    }

    static bool is_directory(const std::string& p) {
        struct stat st {};
        return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    }

    // --- input selection --------------------------------------------------------

    bool ensure_input() {
        if (mode_ == Mode::Stdin) {
            if (fd_ < 0) {
                fd_ = STDIN_FILENO;
                name_ = "stdin";
                reset_buffer(0, 1);
            }
            return !(stdin_eof_ && pos_ == len_);
        }
        if (fd_ >= 0) {
            if (mode_ == Mode::File) check_replaced();
            return fd_ >= 0;
        }
        if (mode_ == Mode::File) return open_file_mode();
        return open_directory_mode();
    }

    bool open_file_mode() {
        if (is_directory(path_)) { // created as a directory after we started
            mode_ = Mode::Directory;
            return open_directory_mode();
        }
        std::string name = std::string(std::string_view(path_).substr(path_.rfind('/') + 1));
        return open_at(path_, name, committed_.name == name ? &committed_ : nullptr);
    }

    bool open_directory_mode() {
        // Resume the cursor's file if it is still there, else the next name.
        std::vector<std::string> names = list_directory();
        if (!committed_.name.empty() &&
            std::binary_search(names.begin(), names.end(), committed_.name))
            return open_at(path_ + "/" + committed_.name, committed_.name, &committed_);
        auto it = std::upper_bound(names.begin(), names.end(), committed_.name);
        if (it == names.end()) return false;
        return open_at(path_ + "/" + *it, *it, nullptr);
    }

    // Opens `file`; with `resume`, continues at its position if it is the same
    // file (inode) and not shorter, else starts again from the top.
    bool open_at(const std::string& file, const std::string& name, const Cursor* resume) {
        int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (!open_error_logged_) {
                if (errno == ENOENT)
                    host().info("waiting for input " + file);
                else
                    host().error("cannot open input " + file + ": " + os_error());
                open_error_logged_ = true;
            }
            return false;
        }
        struct stat st {};
        if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            ::close(fd);
            if (!open_error_logged_) host().error("input " + file + " is not a regular file");
            open_error_logged_ = true;
            return false;
        }
        open_error_logged_ = false;
        fd_ = fd;
        name_ = name;
        dev_ = static_cast<std::uint64_t>(st.st_dev);
        ino_ = static_cast<std::uint64_t>(st.st_ino);
        std::uint64_t offset = 0, line = 1;
        if (resume) {
            bool same = resume->ino == ino_ && resume->dev == dev_ &&
                        static_cast<std::uint64_t>(st.st_size) >= resume->offset;
            if (same) {
                offset = resume->offset;
                line = resume->line;
            } else {
                host().warn("input " + name + " was replaced or truncated; reading it from the start");
                host().count("inputs_restarted");
            }
        }
        if (offset == 0) host().count("files_started");
        reset_buffer(offset, line);
        quarantined_through_ = 0;
        tail_size_ = -1;
        return true;
    }

    // File mode: an import written elsewhere and renamed over the path, or a
    // file truncated in place, is read from the start once this one is done.
    void check_replaced() {
        if (pos_ != len_ || skipping_) return; // still reading what we have
        struct stat now {}, mine {};
        if (::fstat(fd_, &mine) != 0) return;
        std::uint64_t have = base_ + len_;
        auto size = static_cast<std::uint64_t>(mine.st_size);
        bool truncated = size < have;
        bool replaced = size == have && ::stat(path_.c_str(), &now) == 0 &&
                        (static_cast<std::uint64_t>(now.st_ino) != ino_ ||
                         static_cast<std::uint64_t>(now.st_dev) != dev_);
        if (!replaced && !truncated) return;
        host().info("input " + name_ + (replaced ? " was replaced" : " was truncated") +
                    "; reading the new content from the start");
        host().count("inputs_restarted");
        std::string name = name_;
        close_input();
        open_at(path_, name, nullptr); // the next commit replaces the old cursor
    }

    std::vector<std::string> list_directory() {
        std::vector<std::string> names;
        DIR* d = ::opendir(path_.c_str());
        if (!d) {
            if (!open_error_logged_) host().error("cannot list " + path_ + ": " + os_error());
            open_error_logged_ = true;
            return names;
        }
        while (dirent* e = ::readdir(d)) {
            if (::fnmatch(pattern_.c_str(), e->d_name, FNM_PERIOD) != 0) continue;
            if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN && e->d_type != DT_LNK) continue;
            names.emplace_back(e->d_name);
        }
        ::closedir(d);
        std::sort(names.begin(), names.end());
        return names;
    }

    // Directory mode, current file read to its end: moves to the next name.
    bool next_file() {
        std::vector<std::string> names = list_directory();
        auto it = std::upper_bound(names.begin(), names.end(), name_);
        if (it == names.end()) return false;
        host().count("files_finished");
        host().info("finished " + name_ + " at line " + std::to_string(line_no_ - 1) +
                    "; next: " + *it);
        std::string next = *it;
        close_input();
        if (!open_at(path_ + "/" + next, next, nullptr)) return false;
        return true;
    }

    // Whether an unterminated last line will never grow: standard input is
    // closed, or (directory mode) a later file exists and this one has not
    // changed size since the previous poll. A single input file may still be
    // appended to, so its tail waits for its newline.
    bool tail_is_final() {
        if (mode_ == Mode::Stdin) return stdin_eof_;
        if (mode_ != Mode::Directory) return false;
        std::int64_t size = static_cast<std::int64_t>(base_ + len_);
        if (size != tail_size_) {
            tail_size_ = size; // look again next poll
            return false;
        }
        std::vector<std::string> names = list_directory();
        return std::upper_bound(names.begin(), names.end(), name_) != names.end();
    }

    void close_input() {
        if (fd_ >= 0 && fd_ != STDIN_FILENO) ::close(fd_);
        fd_ = -1;
    }

    // --- watching -----------------------------------------------------------------

    // Waits up to kWatchWaitMs for the input to change. True: call again at
    // once (changed, or the wait ran out: the host must get the thread back
    // now and then to stop us); false: no watch, wait poll_interval.
    bool wait_for_change() {
        int fd = -1;
        if (mode_ == Mode::Stdin) {
            if (stdin_eof_ || fd_ < 0) return false;
            fd = fd_;
        } else {
            if (!ensure_watch()) return false;
            fd = inotify_;
        }
        pollfd p{fd, POLLIN, 0};
        ::poll(&p, 1, kWatchWaitMs);
        return true;
    }

    // Reads the pending inotify events (they only say "look again").
    void drain_events() {
        alignas(inotify_event) char events[4096];
        bool gone = false;
        ssize_t n;
        while ((n = ::read(inotify_, events, sizeof events)) > 0)
            for (ssize_t at = 0; at < n;) {
                const auto* e = reinterpret_cast<const inotify_event*>(events + at);
                if (e->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) gone = true;
                at += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
            }
        if (gone) close_watch(); // the directory went: watch it again once it is back
    }

    // The directory holding the input, watched for new, grown, renamed files.
    bool ensure_watch() {
        if (inotify_ >= 0 && watched_mode_ == mode_) return true;
        close_watch();
        if (watch_failed_) return false;
        inotify_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (inotify_ < 0) {
            watch_failed_ = true;
            host().warn("cannot watch the input (" + os_error() + "); reading it every poll_interval instead");
            return false;
        }
        std::string dir = path_;
        if (mode_ == Mode::File) {
            auto slash = path_.rfind('/');
            dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash);
        }
        if (::inotify_add_watch(inotify_, dir.c_str(),
                                IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF |
                                    IN_MOVE_SELF) < 0) {
            // Not there yet (or not ours to watch): poll_interval until it is.
            if (errno != ENOENT && !watch_failed_) {
                watch_failed_ = true;
                host().warn("cannot watch " + dir + " (" + os_error() + "); reading it every poll_interval instead");
            }
            close_watch();
            return false;
        }
        watched_mode_ = mode_;
        return true;
    }

    void close_watch() {
        if (inotify_ >= 0) ::close(inotify_);
        inotify_ = -1;
    }

    // --- buffer -------------------------------------------------------------------

    void reset_buffer(std::uint64_t offset, std::uint64_t line) {
        base_ = offset;
        pos_ = len_ = scan_ = mark_ = 0;
        line_no_ = mark_line_ = line;
        skipping_ = false;
    }

    // Where a failed commit rewinds to.
    void set_mark() {
        mark_ = pos_;
        mark_line_ = line_no_;
    }

    // Reads the next block after what the buffer holds. Bytes before mark_
    // (committed) are dropped first. Returns bytes read, 0 for none now, -1
    // on error.
    long fill() {
        if (mark_ > 0 && (mark_ >= len_ / 2 || cap_ - len_ < kReadBlock)) {
            std::memmove(buf_.get(), buf_.get() + mark_, len_ - mark_);
            base_ += mark_;
            len_ -= mark_;
            pos_ -= mark_;
            scan_ -= std::min(scan_, mark_);
            mark_ = 0;
        }
        if (cap_ - len_ < kReadBlock) {
            std::size_t cap = std::max(cap_ * 2, len_ + kReadBlock);
            auto bigger = std::make_unique_for_overwrite<char[]>(cap);
            if (len_) std::memcpy(bigger.get(), buf_.get(), len_);
            buf_ = std::move(bigger);
            cap_ = cap;
        }
        ssize_t r;
        if (mode_ == Mode::Stdin) {
            if (stdin_eof_) return 0;
            pollfd p{fd_, POLLIN, 0};
            // Never block: poll() must come back so that the host can stop us.
            int ready = ::poll(&p, 1, 0);
            if (ready <= 0) return 0;
            r = ::read(fd_, buf_.get() + len_, cap_ - len_);
            if (r == 0) {
                stdin_eof_ = true;
                host().info("standard input closed after line " + std::to_string(line_no_ - 1));
            }
        } else {
            r = ::pread(fd_, buf_.get() + len_, cap_ - len_, static_cast<off_t>(base_ + len_));
        }
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) return 0;
            host().count("read_errors");
            if (!read_error_logged_) host().error("cannot read " + name_ + ": " + os_error());
            read_error_logged_ = true;
            return -1;
        }
        read_error_logged_ = false;
        len_ += static_cast<std::size_t>(r);
        return r;
    }

    // --- lines -----------------------------------------------------------------------

    // The line in [pos_, end) is complete; the next starts at `next`.
    void take_line(std::size_t end, std::size_t next, std::vector<sb::Record>& records,
                   std::vector<LineRef>& refs) {
        const std::size_t at = pos_;
        const std::uint64_t line = line_no_;
        std::string_view text(buf_.get() + at, end - at);
        pos_ = next;
        scan_ = next;
        ++line_no_;
        ++lines_taken_;
        if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
        if (base_ + at == 0 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3); // BOM
        if (text.find_first_not_of(" \t\r") == std::string_view::npos) {
            host().count("lines_blank");
            return;
        }
        if (text.size() > max_line_) {
            host().count("lines_oversized");
            quarantine(text.substr(0, std::min(max_line_, kQuarantineHead)), line,
                       "longer than max_line (" + std::to_string(text.size()) + " bytes)");
            return;
        }
        sb::Record rec = host().record();
        bool ok;
        if (flat_) {
            sorting_->begin(rec.handle(), text);
            ok = reader_.read_flat(text, *sorting_, sorted_options_);
            if (ok && sorting_->finish() != SB_OK) {
                // Never expected: read it the plain way, for the reader's
                // own verdict and message.
                rec = host().record();
                sb::detail::HostRecordSink sink(host().api(), rec.handle());
                ok = reader_.read_flat(text, sink, flat_options_);
            }
        } else {
            sb::detail::HostRecordSink sink(host().api(), rec.handle());
            ok = reader_.read_record(text, sink, record_options_);
        }
        if (!ok) {
            host().count("lines_malformed");
            quarantine(text, line, reader_.error().text());
            return;
        }
        if (!rec.meta(SB_META_CHANNEL))
            host().api()->record_set_meta(rec.handle(), SB_META_CHANNEL, channel_.c_str());
        records.push_back(std::move(rec));
        refs.push_back({base_ + static_cast<std::uint64_t>(text.data() - buf_.get()), text.size(),
                        line});
    }

    void start_skip() {
        skipping_ = true;
        skip_line_ = line_no_;
        skip_bytes_ = len_ - pos_;
        skip_head_.assign(buf_.get() + pos_, std::min(len_ - pos_, std::min(max_line_, kQuarantineHead)));
        pos_ = scan_ = mark_ = len_; // the rest of this line is never needed
        mark_line_ = line_no_;
    }

    // Discards the oversized line up to its newline. True once it ended.
    bool skip_oversized() {
        for (;;) {
            const void* nl = pos_ < len_ ? std::memchr(buf_.get() + pos_, '\n', len_ - pos_) : nullptr;
            if (nl) {
                std::size_t end = static_cast<std::size_t>(static_cast<const char*>(nl) - buf_.get());
                skip_bytes_ += end - pos_;
                pos_ = scan_ = end + 1;
                break;
            }
            skip_bytes_ += len_ - pos_;
            pos_ = scan_ = mark_ = len_;
            mark_line_ = line_no_;
            long got = fill();
            if (got > 0) continue;
            if (len_ == pos_ && tail_is_final()) break; // it ends the input
            return false;
        }
        skipping_ = false;
        ++line_no_;
        ++lines_taken_;
        host().count("lines_oversized");
        quarantine(skip_head_, skip_line_,
                   "longer than max_line (" + std::to_string(skip_bytes_) + " bytes, first " +
                       std::to_string(skip_head_.size()) + " kept)");
        skip_head_.clear();
        skip_head_.shrink_to_fit();
        return true;
    }

    void quarantine(std::string_view bytes, std::uint64_t line, const std::string& why,
                    bool after_commit = false) {
        // After a failed commit the same lines are read again: quarantine each
        // once. (pos_ is already past the line.)
        if (!after_commit) {
            std::uint64_t end = base_ + static_cast<std::uint64_t>(pos_);
            if (end <= quarantined_through_) return;
            quarantined_through_ = end;
        }
        std::string reason = "line " + std::to_string(line) + ": " + why;
        std::string ref = name_ + ":" + std::to_string(line);
        sb::Status s = host().quarantine(bytes, reason, ref.c_str());
        host().count("lines_quarantined");
        if (s != SB_OK) host().count("quarantine_failed");
        if (logs_this_poll_++ < kLogsPerPoll)
            host().warn("quarantined " + ref + ": " + why);
        else if (logs_this_poll_ == kLogsPerPoll + 1)
            host().warn("more lines quarantined in this batch; see the lines_quarantined counter");
    }

    Cursor here() const {
        Cursor c;
        c.name = name_;
        c.dev = dev_;
        c.ino = ino_;
        c.offset = base_ + pos_;
        c.line = line_no_;
        return c;
    }

    // Commits the position when nothing was emitted (quarantined or blank
    // lines, a skipped line, a new file).
    void commit_position() {
        if (mode_ == Mode::Stdin) return;
        Cursor c = here();
        if (c.name == committed_.name && c.offset == committed_.offset && c.ino == committed_.ino)
            return;
        if (host().set_state("cursor", c.text()) == SB_OK)
            committed_ = c;
        else
            host().count("cursor_not_saved");
    }

    // Configuration.
    const std::string path_;
    const std::string pattern_;
    const bool flat_;
    const std::string channel_;
    const std::string external_id_field_;
    const std::string occurred_at_field_;
    const std::size_t batch_;
    const bool read_ahead_;
    const std::size_t max_line_;
    sb::detail::CategoryMap categories_;
    sb::detail::FlatReadOptions flat_options_;
    sb::detail::FlatReadOptions sorted_options_;
    std::optional<sb::detail::SortingSink> sorting_;
    sb::detail::RecordReadOptions record_options_;
    Mode mode_ = Mode::File;

    // How long a poll waits for the input to change (see wait_for_change):
    // also how late, at most, the host can stop the instance.
    static constexpr int kWatchWaitMs = 200;
    // How long a poll goes on reading ahead (then it waits for its last
    // batch and returns): how late, at most, the host can stop the instance
    // while it reads a long input.
    static constexpr int kReadAheadMs = 1000;
    const bool watch_;
    int inotify_ = -1;
    Mode watched_mode_ = Mode::File;
    bool watch_failed_ = false;

    // Input. poll() runs on one thread per instance, so none of this is locked.
    Cursor committed_;
    int fd_ = -1;
    std::string name_;
    std::uint64_t dev_ = 0, ino_ = 0;
    bool stdin_eof_ = false;
    bool open_error_logged_ = false;
    bool read_error_logged_ = false;
    std::uint64_t lines_taken_ = 0; // this poll, for the lines_read counter
    std::int64_t tail_size_ = -1;

    std::unique_ptr<char[]> buf_;
    std::size_t cap_ = 0;
    std::uint64_t base_ = 0; // input offset of buf_[0]
    std::size_t len_ = 0;    // bytes held
    std::size_t pos_ = 0;    // start of the next line
    std::size_t scan_ = 0;   // searched for '\n' up to here
    std::size_t mark_ = 0;   // start of the uncommitted batch: kept until committed
    std::uint64_t mark_line_ = 1;
    std::uint64_t line_no_ = 1;
    std::uint64_t quarantined_through_ = 0;

    bool skipping_ = false;
    std::uint64_t skip_line_ = 0;
    std::uint64_t skip_bytes_ = 0;
    std::string skip_head_;

    sb::detail::JsonRecordReader reader_;
    int logs_this_poll_ = 0;
};

} // namespace

SB_PLUGIN(JsonlSource)
