// jsonl-file: writes each delivered (already minimised) record as one JSON
// line into <dir>/<instance>-YYYY-MM-DD.jsonl, rotated by day and by size
// (<instance>-YYYY-MM-DD.N.jsonl), and deletes its files on the retention
// clock.
//
// Durability contract with the host: deliver() only appends to a buffer and
// returns SB_OK; flush() writes the buffer (one write() per file) and
// fdatasyncs, and returns SB_OK only once it is durable. The host counts a
// delivery as done only after a successful flush that follows it, so a failed
// flush drops the buffer (the host delivers those records again) after
// cutting back whatever part of it reached the files.
//
// Expiry: a timer deletes every file whose newest line is older than the
// retention (file day + 1 day <= now - retention, on the host clock). An
// erasure on request (SB_ERASE_REQUEST) rewrites the files without the
// record's lines (temporary file, rename, directory fsync).
#include <switchboard/plugin.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::int64_t kDayMs = 86'400'000;
constexpr std::size_t kMaxPending = 256u << 20; // refuse deliveries beyond this until a flush
constexpr std::size_t kCopyBlock = 1 << 20;

std::string os_error() { return std::strerror(errno); }

// Days since 1970-01-01 as "YYYY-MM-DD".
std::string day_text(std::int64_t day) { return sb::format_time(day * kDayMs).substr(0, 10); }

// "YYYY-MM-DD" to days since 1970-01-01 (Howard Hinnant's days_from_civil).
std::optional<std::int64_t> parse_day(std::string_view s) {
    if (s.size() != 10 || s[4] != '-' || s[7] != '-') return std::nullopt;
    auto num = [&](std::size_t at, std::size_t n) -> std::optional<int> {
        int v = 0;
        for (std::size_t k = at; k < at + n; ++k) {
            if (s[k] < '0' || s[k] > '9') return std::nullopt;
            v = v * 10 + (s[k] - '0');
        }
        return v;
    };
    auto y = num(0, 4), m = num(5, 2), d = num(8, 2);
    if (!y || !m || !d || *m < 1 || *m > 12 || *d < 1 || *d > 31) return std::nullopt;
    std::int64_t yy = *y - (*m <= 2);
    std::int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    std::int64_t yoe = yy - era * 400;
    std::int64_t doy = (153 * (*m + (*m > 2 ? -3 : 9)) + 2) / 5 + *d - 1;
    std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

bool write_all(int fd, const char* p, std::size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}

class JsonlFile : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "jsonl-file";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "Writes delivered records as JSON lines, one file per day, expired on the retention clock";
        i.kind = SB_KIND_DESTINATION;
        i.capabilities = SB_CAP_TIMERS | SB_CAP_JSON_RECORDS; // reads record_json only
        i.config = {
            sb::Field::path("dir").required().describe(
                "Directory of the output files <instance>-YYYY-MM-DD[.N].jsonl"),
            sb::Field::size("max_file_size").min(1024).fallback("\"256MiB\"").describe(
                "Start a new file (.1, .2, ...) for the day when the current one would exceed this"),
            sb::Field::duration("retention").min(3'600'000).fallback("\"28d\"").describe(
                "Delete a file once its newest line is older than this"),
            sb::Field::duration("sweep_interval").min(1000).fallback("\"1h\"").describe(
                "How often expired files are looked for"),
        };
        return i;
    }

    explicit JsonlFile(sb::Host host)
        : sb::Plugin(host),
          dir_(host.string("dir")),
          max_file_size_(static_cast<std::uint64_t>(host.integer("max_file_size"))),
          retention_ms_(host.duration_ms("retention")),
          sweep_ms_(host.duration_ms("sweep_interval")),
          prefix_(host.instance_name() + "-") {
        std::error_code ec;
        std::filesystem::create_directories(dir_, ec);
        if (ec || !std::filesystem::is_directory(dir_))
            throw sb::Error(SB_ERR_INVALID, "config key 'dir': cannot use directory " + dir_ +
                                                ": " + (ec ? ec.message() : "not a directory"));
    }

    ~JsonlFile() override { close_current(); }

    void start() {
        {
            std::lock_guard lock(files_);
            remove_stale_temporaries();
        }
        sweep();
        host().timer(sweep_ms_, sweep_ms_, [this] { sweep(); });
        std::string keep = retention_ms_ % kDayMs == 0
                               ? std::to_string(retention_ms_ / kDayMs) + "d"
                               : std::to_string(retention_ms_ / 3'600'000) + "h";
        host().info("writing to " + dir_ + "; files kept " + keep + " after their day ends");
    }

    // Buffers the line; durable only after the next successful flush.
    sb::Status deliver(const sb::Delivery& d) {
        if (pending_bytes_ > kMaxPending) {
            host().count("deliveries_deferred");
            throw sb::Error(SB_ERR_TRANSIENT, "output buffer full; waiting for a flush");
        }
        std::int64_t day = floor_div(host().now_ms(), kDayMs);
        if (pending_.empty() || pending_.back().day != day) pending_.push_back({day, {}});
        std::string& out = pending_.back().bytes;
        std::size_t before = out.size();
        std::string_view record = d.record.json();
        out.reserve(out.size() + record.size() + d.record_id.size() + 128);
        out += "{\"seq\":";
        append_int(out, static_cast<std::int64_t>(d.sequence));
        out += ",\"record_id\":";
        out += sb::json_quote(d.record_id);
        out += ",\"purpose\":";
        out += sb::json_quote(d.purpose);
        out += ",\"profile\":";
        out += sb::json_quote(d.profile);
        out += ",\"profile_version\":";
        append_int(out, d.profile_version);
        out += ",\"record\":";
        out += record.empty() ? std::string_view("null") : record;
        out += "}\n";
        pending_bytes_ += out.size() - before;
        ++pending_lines_;
        return SB_OK;
    }

    // Writes the buffer and makes it durable. SB_OK only when it is.
    sb::Status flush() {
        if (pending_.empty()) return SB_OK;
        std::lock_guard lock(files_);
        std::vector<Touched> touched;
        std::string why;
        bool ok = true;
        for (const Segment& seg : pending_)
            if (!(ok = write_segment(seg, touched, why))) break;
        if (ok) ok = sync_all(touched, why);
        std::uint64_t lines = pending_lines_;
        pending_.clear();
        pending_bytes_ = 0;
        pending_lines_ = 0;
        if (!ok) {
            roll_back(touched);
            host().count("flush_failures");
            // The host delivers these records again; nothing of them is kept.
            throw sb::Error(SB_ERR_TRANSIENT, "could not make output durable (" + why + ")");
        }
        for (Touched& t : touched)
            if (t.fd != cur_fd_) ::close(t.fd);
        host().count("lines_written", lines);
        return SB_OK;
    }

    sb::Status erase(const sb::EraseRequest& req) {
        std::string id(req.record_id);
        if (req.reason == SB_ERASE_RETENTION) {
            // The files expire on this instance's own clock (sweep): rewriting
            // every file for each expiring record would rewrite the whole
            // store daily. See the README for the bound this gives.
            host().count("erase_retention");
            return SB_OK;
        }
        std::size_t buffered = erase_pending(id);
        std::lock_guard lock(files_);
        std::size_t lines = 0, files = 0;
        for (const OwnFile& f : own_files()) {
            std::size_t n = 0;
            std::string why;
            if (!rewrite_without(f.name, id, n, why)) {
                host().count("erase_failures");
                throw sb::Error(SB_ERR_TRANSIENT, "erase of record " + id + " from " + f.name +
                                                      " failed (" + why + ")");
            }
            if (n) {
                lines += n;
                ++files;
            }
        }
        host().count("erase_requests");
        host().count("lines_erased", lines + buffered);
        host().info("erased record " + id + ": " + std::to_string(lines) + " line(s) in " +
                    std::to_string(files) + " file(s)" +
                    (buffered ? ", " + std::to_string(buffered) + " unflushed" : ""));
        return SB_OK;
    }

private:
    struct Segment {
        std::int64_t day;
        std::string bytes; // whole lines
    };
    struct Touched {
        int fd;
        std::string name;
        std::uint64_t old_size; // durable size before this flush
        bool created;
    };
    struct OwnFile {
        std::string name;
        std::int64_t day;
        unsigned n; // 0 for the first file of the day
    };

    static std::int64_t floor_div(std::int64_t a, std::int64_t b) {
        return a >= 0 ? a / b : -((-a + b - 1) / b);
    }
    static void append_int(std::string& out, std::int64_t v) {
        char buf[24];
        auto r = std::to_chars(buf, buf + sizeof buf, v);
        out.append(buf, static_cast<std::size_t>(r.ptr - buf));
    }

    std::string file_name(std::int64_t day, unsigned n) const {
        return prefix_ + day_text(day) + (n ? "." + std::to_string(n) : std::string()) + ".jsonl";
    }
    std::string full(const std::string& name) const { return dir_ + "/" + name; }

    // This instance's files: <instance>-YYYY-MM-DD.jsonl or ...-YYYY-MM-DD.N.jsonl.
    std::optional<OwnFile> own(std::string_view name) const {
        if (name.substr(0, prefix_.size()) != prefix_) return std::nullopt;
        name.remove_prefix(prefix_.size());
        auto day = parse_day(name.substr(0, 10));
        if (!day) return std::nullopt;
        name.remove_prefix(10);
        unsigned n = 0;
        if (name.size() > 7 && name[0] == '.' && name[1] != '0') {
            auto r = std::from_chars(name.data() + 1, name.data() + name.size(), n);
            if (r.ec != std::errc() || n == 0) return std::nullopt;
            name.remove_prefix(static_cast<std::size_t>(r.ptr - name.data()));
        }
        if (name != ".jsonl") return std::nullopt;
        return OwnFile{{}, *day, n};
    }

    std::vector<OwnFile> own_files() const {
        std::vector<OwnFile> out;
        DIR* d = ::opendir(dir_.c_str());
        if (!d) return out;
        while (dirent* e = ::readdir(d)) {
            if (auto f = own(e->d_name)) {
                f->name = e->d_name;
                out.push_back(std::move(*f));
            }
        }
        ::closedir(d);
        std::sort(out.begin(), out.end(), [](const OwnFile& a, const OwnFile& b) {
            return a.day != b.day ? a.day < b.day : a.n < b.n;
        });
        return out;
    }

    bool sync_dir(std::string& why) const {
        int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            why = "open directory: " + os_error();
            return false;
        }
        bool ok = ::fsync(fd) == 0;
        if (!ok) why = "fsync directory: " + os_error();
        ::close(fd);
        return ok;
    }

    void close_current() {
        if (cur_fd_ >= 0) ::close(cur_fd_);
        cur_fd_ = -1;
    }

    // --- writing (files_ held) -------------------------------------------------------

    // Opens file `n` of `day` for appending (with `exclusive`, only a new
    // one) and makes it current. Returns 0, or the errno of the failure. A
    // file already written in this flush stays open until it is synced.
    int open_file(std::int64_t day, unsigned n, bool exclusive, std::vector<Touched>& touched,
                  std::string& why) {
        std::string name = file_name(day, n);
        int flags = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : 0);
        bool existed = !exclusive && ::access(full(name).c_str(), F_OK) == 0;
        int fd = ::open(full(name).c_str(), flags, 0640);
        if (fd < 0) {
            int err = errno;
            why = "open " + name + ": " + std::strerror(err);
            return err ? err : EIO;
        }
        struct stat st {};
        ::fstat(fd, &st);
        if (cur_fd_ >= 0 && !is_touched(touched, cur_fd_)) ::close(cur_fd_);
        cur_fd_ = fd;
        cur_day_ = day;
        cur_n_ = n;
        cur_size_ = static_cast<std::uint64_t>(st.st_size);
        cur_name_ = name;
        touched.push_back({fd, name, cur_size_, !existed});
        if (!existed) host().count("files_created");
        return 0;
    }

    static bool is_touched(const std::vector<Touched>& touched, int fd) {
        return std::any_of(touched.begin(), touched.end(),
                           [&](const Touched& t) { return t.fd == fd; });
    }

    // The file to append to for `day`: the current one, else the last of that
    // day on disk (after a restart), else a new one.
    bool file_for_day(std::int64_t day, std::vector<Touched>& touched, std::string& why) {
        if (cur_fd_ >= 0 && cur_day_ == day) {
            if (!is_touched(touched, cur_fd_)) touched.push_back({cur_fd_, cur_name_, cur_size_, false});
            return true;
        }
        unsigned last = 0;
        for (const OwnFile& f : own_files())
            if (f.day == day) last = std::max(last, f.n);
        return open_file(day, last, false, touched, why) == 0;
    }

    bool write_segment(const Segment& seg, std::vector<Touched>& touched, std::string& why) {
        std::string_view rest = seg.bytes;
        while (!rest.empty()) {
            if (!file_for_day(seg.day, touched, why)) return false;
            // As many whole lines as fit; a file that is still empty takes at
            // least one line, however long.
            std::size_t take = rest.size();
            if (cur_size_ + take > max_file_size_) {
                take = 0;
                while (take < rest.size()) {
                    std::size_t next = rest.find('\n', take) + 1;
                    if (cur_size_ + next > max_file_size_ && (take > 0 || cur_size_ > 0)) break;
                    take = next;
                }
            }
            if (take > 0) {
                if (!write_all(cur_fd_, rest.data(), take)) {
                    why = "write " + cur_name_ + ": " + os_error();
                    return false;
                }
                cur_size_ += take;
                rest.remove_prefix(take);
            }
            if (!rest.empty()) { // full: the next file of the day
                host().count("files_rotated");
                unsigned n = cur_n_;
                int err;
                // A name may be taken already (an earlier run's file): skip it.
                do err = open_file(seg.day, ++n, true, touched, why);
                while (err == EEXIST && n < cur_n_ + 100000);
                if (err) return false;
            }
        }
        return true;
    }

    bool sync_all(const std::vector<Touched>& touched, std::string& why) {
        bool created = false;
        for (const Touched& t : touched) {
            if (::fdatasync(t.fd) != 0) {
                why = "fdatasync " + t.name + ": " + os_error();
                return false;
            }
            created = created || t.created;
        }
        return !created || sync_dir(why); // new names must survive a crash too
    }

    // A failed flush: cut each file back to what was durable before it, so
    // the host's redelivery does not leave lines twice.
    void roll_back(std::vector<Touched>& touched) {
        for (Touched& t : touched) {
            bool cut = ::ftruncate(t.fd, static_cast<off_t>(t.old_size)) == 0;
            if (t.created && t.old_size == 0) ::unlink(full(t.name).c_str());
            if (!cut) {
                host().count("rollback_failures");
                host().error("could not cut " + t.name + " back after a failed flush; a redelivered "
                             "record may appear twice (its record_id tells)");
            }
            if (t.fd != cur_fd_) ::close(t.fd);
        }
        close_current(); // reopen (and re-measure) at the next flush
    }

    // --- erasure (files_ held for files) -----------------------------------------------

    // Whether `line` is this record's line: {"seq":N,"record_id":"<id>",...
    static bool line_of(std::string_view line, std::string_view quoted_id) {
        constexpr std::string_view head = "{\"seq\":";
        if (line.substr(0, head.size()) != head) return false;
        std::size_t i = head.size();
        while (i < line.size() && line[i] >= '0' && line[i] <= '9') ++i;
        constexpr std::string_view key = ",\"record_id\":";
        if (line.substr(i, key.size()) != key) return false;
        i += key.size();
        return line.substr(i, quoted_id.size()) == quoted_id &&
               line.substr(i + quoted_id.size(), 1) == ",";
    }

    std::size_t erase_pending(const std::string& id) {
        std::string quoted = sb::json_quote(id);
        std::size_t removed = 0;
        for (Segment& seg : pending_) {
            std::string kept;
            std::string_view rest = seg.bytes;
            while (!rest.empty()) {
                std::size_t nl = rest.find('\n');
                std::string_view line = rest.substr(0, nl + 1);
                rest.remove_prefix(line.size());
                if (line_of(line, quoted)) {
                    ++removed;
                    pending_bytes_ -= line.size();
                    --pending_lines_;
                } else {
                    kept.append(line);
                }
            }
            seg.bytes = std::move(kept);
        }
        std::erase_if(pending_, [](const Segment& s) { return s.bytes.empty(); });
        return removed;
    }

    // Streams `name`, counting the record's lines; if there are any, writes
    // the others to a temporary file and renames it over `name`.
    bool rewrite_without(const std::string& name, const std::string& id, std::size_t& removed,
                         std::string& why) {
        const std::string quoted = sb::json_quote(id);
        removed = 0;
        if (!filter(name, quoted, -1, removed, why)) return false;
        if (removed == 0) return true;
        const std::string tmp = "." + name + ".erase.tmp";
        int out = ::open(full(tmp).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (out < 0) {
            why = "create temporary file: " + os_error();
            return false;
        }
        std::size_t again = 0;
        bool ok = filter(name, quoted, out, again, why);
        if (ok && ::fdatasync(out) != 0) {
            ok = false;
            why = "fdatasync temporary file: " + os_error();
        }
        ::close(out);
        if (ok && ::rename(full(tmp).c_str(), full(name).c_str()) != 0) {
            ok = false;
            why = "rename: " + os_error();
        }
        if (!ok) {
            ::unlink(full(tmp).c_str());
            return false;
        }
        // The append handle points at the old file now.
        if (name == cur_name_) close_current();
        return sync_dir(why);
    }

    // Reads `name` line by line; lines of the record are counted, the others
    // written to `out` if it is >= 0.
    bool filter(const std::string& name, const std::string& quoted, int out, std::size_t& removed,
                std::string& why) {
        int in = ::open(full(name).c_str(), O_RDONLY | O_CLOEXEC);
        if (in < 0) {
            if (errno == ENOENT) return true; // swept meanwhile
            why = "open " + name + ": " + os_error();
            return false;
        }
        std::string buf, kept;
        buf.resize(kCopyBlock);
        std::string carry; // an incomplete line from the previous block
        bool ok = true;
        for (;;) {
            ssize_t r = ::read(in, buf.data(), buf.size());
            if (r < 0) {
                if (errno == EINTR) continue;
                why = "read " + name + ": " + os_error();
                ok = false;
                break;
            }
            if (r == 0) break;
            std::string_view block(buf.data(), static_cast<std::size_t>(r));
            kept.clear();
            while (!block.empty()) {
                std::size_t nl = block.find('\n');
                if (nl == std::string_view::npos) {
                    carry.append(block);
                    break;
                }
                std::string_view line = block.substr(0, nl + 1);
                block.remove_prefix(nl + 1);
                std::string joined;
                if (!carry.empty()) {
                    joined = std::move(carry);
                    carry.clear();
                    joined.append(line);
                    line = joined;
                }
                if (line_of(line, quoted))
                    ++removed;
                else if (out >= 0)
                    kept.append(line);
            }
            if (out >= 0 && !write_all(out, kept.data(), kept.size())) {
                why = "write temporary file: " + os_error();
                ok = false;
                break;
            }
        }
        // A last line without a newline (not written by us) is kept as it is.
        if (ok && !carry.empty() && !line_of(carry, quoted) && out >= 0 &&
            !write_all(out, carry.data(), carry.size())) {
            why = "write temporary file: " + os_error();
            ok = false;
        }
        if (ok && !carry.empty() && line_of(carry, quoted)) ++removed;
        ::close(in);
        return ok;
    }

    void remove_stale_temporaries() {
        // Left by an erase interrupted by a crash; the original is intact.
        DIR* d = ::opendir(dir_.c_str());
        if (!d) return;
        std::vector<std::string> stale;
        while (dirent* e = ::readdir(d)) {
            std::string_view n(e->d_name);
            if (n.size() > 1 && n[0] == '.' && n.substr(1, prefix_.size()) == prefix_ &&
                n.size() > 10 && n.substr(n.size() - 10) == ".erase.tmp")
                stale.emplace_back(n);
        }
        ::closedir(d);
        for (const auto& n : stale) ::unlink(full(n).c_str());
    }

    // --- retention ------------------------------------------------------------------

    // Deletes files whose newest line is older than the retention. Timer thread.
    void sweep() {
        std::lock_guard lock(files_);
        const std::int64_t cutoff = host().now_ms() - retention_ms_;
        std::size_t deleted = 0;
        for (const OwnFile& f : own_files()) {
            // Every line of day D was written before the end of day D.
            if ((f.day + 1) * kDayMs > cutoff) continue;
            if (f.name == cur_name_) close_current();
            if (::unlink(full(f.name).c_str()) != 0 && errno != ENOENT) {
                host().count("expire_failures");
                host().error("cannot delete expired " + f.name + ": " + os_error());
                continue;
            }
            ++deleted;
            host().info("deleted " + f.name + " (retention)");
        }
        if (deleted) {
            std::string why;
            if (!sync_dir(why)) host().warn("expired files deleted but " + why);
            host().count("files_expired", deleted);
        }
    }

    // Configuration.
    const std::string dir_;
    const std::uint64_t max_file_size_;
    const std::int64_t retention_ms_;
    const std::int64_t sweep_ms_;
    const std::string prefix_;

    // Buffered lines: the queue thread only (deliver, flush, erase).
    std::vector<Segment> pending_;
    std::size_t pending_bytes_ = 0;
    std::uint64_t pending_lines_ = 0;

    // The files: the queue thread writes and rewrites, the timer thread deletes.
    std::mutex files_;
    int cur_fd_ = -1;
    std::int64_t cur_day_ = 0;
    unsigned cur_n_ = 0;
    std::uint64_t cur_size_ = 0;
    std::string cur_name_;
};

} // namespace

SB_PLUGIN(JsonlFile)
