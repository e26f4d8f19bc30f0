// The three places a feed client puts records: a directory of daily JSON
// lines files, standard output, or a command run per record.

#include "switchboard/feed_client.hpp"

#include "feed_json.hpp"
#include "id_index.hpp"

#include <switchboard/detail/abi.hpp>
#include <switchboard/detail/record_data.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>

extern char** environ;

namespace switchboard::feed {

namespace fs = std::filesystem;

namespace {

std::string host_name() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown-host";
    return buf;
}

std::string receipt_prefix() { return "switchboard-feed on " + host_name(); }

std::string erase_line(const EraseNotice& n) {
    std::string out = "{\"erase\":{\"notice\":";
    sb::detail::append_json_string(out, n.notice);
    out += ",\"record_id\":";
    sb::detail::append_json_string(out, n.record_id);
    out += ",\"seq\":" + std::to_string(n.seq) + ",\"reason\":";
    sb::detail::append_json_string(out, n.reason);
    out += "}}";
    return out;
}

bool write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

bool sync_dir(const fs::path& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::fsync(fd) == 0;
    ::close(fd);
    return ok;
}

// ------------------------------------------------------------ directory

bool is_day_file(const std::string& name) {
    // YYYY-MM-DD.jsonl
    if (name.size() != 16 || name.substr(10) != ".jsonl") return false;
    for (std::size_t i = 0; i < 10; ++i) {
        bool digit = name[i] >= '0' && name[i] <= '9';
        if ((i == 4 || i == 7) ? name[i] != '-' : !digit) return false;
    }
    return true;
}

class DirectorySink final : public FeedSink {
public:
    DirectorySink(fs::path dir, LogFn log) : dir_(std::move(dir)), log_(std::move(log)) {
        std::error_code ec;
        // Records are personal data: a directory made here is the owner's only.
        if (fs::create_directories(dir_, ec)) ::chmod(dir_.c_str(), 0700);
        if (ec) throw std::runtime_error("output directory " + dir_.string() + ": " + ec.message());
        for (const auto& e : fs::directory_iterator(dir_)) {
            std::string name = e.path().filename().string();
            if (name.size() > 5 && name[0] == '.' && name.ends_with(".tmp")) {
                // Left by a crash during an erase rewrite; the original is intact.
                fs::remove(e.path(), ec);
                continue;
            }
            if (is_day_file(name)) index_file(name);
        }
    }

    std::string describe() const override { return "directory " + dir_.string(); }

    bool write(const FeedRecord& r, std::string&) override {
        // The same id twice is a resend that crossed a crash between the
        // data sync and the position write: keep the first copy only.
        const std::string& file = day_file();
        if (!index_.insert(r.id, file_no(file))) {
            ++duplicates_;
            return true;
        }
        auto& buf = pending_[file];
        buf += r.body;
        buf.push_back('\n');
        pending_ids_.push_back(r.id);
        return true;
    }

    bool flush(std::string& error) override {
        struct Done {
            fs::path path;
            off_t size;
        };
        std::vector<Done> done;
        bool created = false, ok = true;
        for (auto& [file, data] : pending_) {
            fs::path p = dir_ / file;
            int fd = ::open(p.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
            if (fd < 0) {
                error = "cannot open " + p.string() + ": " + std::strerror(errno);
                ok = false;
                break;
            }
            struct stat sb {};
            ::fstat(fd, &sb);
            created = created || sb.st_size == 0;
            done.push_back({p, sb.st_size});
            bool w = write_all(fd, data) && ::fdatasync(fd) == 0;
            int err = errno;
            ::close(fd);
            if (!w) {
                error = "cannot write " + p.string() + ": " + std::strerror(err);
                ok = false;
                break;
            }
        }
        if (ok && created && !sync_dir(dir_)) {
            error = "cannot sync directory " + dir_.string() + ": " + std::strerror(errno);
            ok = false;
        }
        if (!ok) {
            // Cut every file back so the resent records are written once.
            for (const auto& d : done)
                if (::truncate(d.path.c_str(), d.size) != 0 && log_)
                    log_(LogLevel::Error, "cannot cut " + d.path.string() + " back after a failed write: " +
                                              std::strerror(errno) + "; resent records may appear twice");
            pending_.clear();
            for (const std::string& id : pending_ids_) index_.erase(id); // not written
            pending_ids_.clear();
            return false;
        }
        pending_.clear();
        pending_ids_.clear();
        return true;
    }

    std::vector<EraseResult> erase(const std::vector<EraseNotice>& notices) override {
        // The client flushes what it took before it applies erase notices
        // (FeedClient::Impl::drain): nothing is pending here.
        // One rewrite per file, whatever the number of notices for it.
        std::map<std::string, std::set<std::string>> by_file;
        for (const auto& n : notices)
            if (auto f = index_.find(n.record_id)) by_file[files_[*f]].insert(n.record_id);
        std::map<std::string, std::string> failed;           // file -> error
        std::map<std::string, std::pair<std::string, int>> removed; // id -> (file, lines)
        for (const auto& [file, ids] : by_file) {
            std::string err;
            std::map<std::string, int> counts;
            if (!rewrite_without(file, ids, counts, err)) {
                failed[file] = err;
                continue;
            }
            for (const auto& id : ids) {
                removed[id] = {file, counts[id]};
                index_.erase(id);
            }
        }
        std::vector<EraseResult> out;
        for (const auto& n : notices) {
            EraseResult r;
            if (auto it = removed.find(n.record_id); it != removed.end()) {
                r.ok = true;
                r.receipt = receipt_prefix() + ": deleted " + std::to_string(it->second.second) +
                            " line(s) of record " + n.record_id + " from " + (dir_ / it->second.first).string();
            } else if (auto f = index_.find(n.record_id)) {
                const std::string& file = files_[*f];
                r.error = failed.count(file) ? failed[file] : "not deleted";
            } else {
                r.ok = true;
                r.receipt = receipt_prefix() + ": no copy of record " + n.record_id + " held in " + dir_.string() +
                            " (deleted earlier or never received)";
            }
            out.push_back(std::move(r));
        }
        return out;
    }

private:
    // Today's file name (UTC), made again only when the day changes: it is
    // asked for every record.
    const std::string& day_file() {
        using namespace std::chrono;
        const auto ms = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
        const auto day = ms / 86'400'000;
        if (day != day_ || day_file_.empty()) {
            day_ = day;
            day_file_ = sb::detail::format_time(ms).substr(0, 10) + ".jsonl";
        }
        return day_file_;
    }
    std::int64_t day_ = 0;
    std::string day_file_;

    // The number of a day file in files_ (a few: the newest is asked for).
    std::uint32_t file_no(const std::string& name) {
        for (std::size_t k = files_.size(); k-- > 0;)
            if (files_[k] == name) return static_cast<std::uint32_t>(k);
        files_.push_back(name);
        return static_cast<std::uint32_t>(files_.size() - 1);
    }

    static std::optional<std::string> line_id(const std::string& line) {
        std::string err;
        auto o = json::parse_object(line, err);
        if (!o) return std::nullopt;
        return o->get_string("id");
    }

    void index_file(const std::string& name) {
        fs::path p = dir_ / name;
        int fd = ::open(p.c_str(), O_RDWR | O_CLOEXEC);
        if (fd < 0) throw std::runtime_error("cannot open " + p.string() + ": " + std::strerror(errno));
        std::string data;
        char buf[65536];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) data.append(buf, static_cast<std::size_t>(n));
        // A line cut short by a crash mid-write was never acknowledged: drop it.
        if (!data.empty() && data.back() != '\n') {
            auto keep = data.rfind('\n');
            keep = keep == std::string::npos ? 0 : keep + 1;
            if (::ftruncate(fd, static_cast<off_t>(keep)) == 0) {
                if (log_)
                    log_(LogLevel::Warn, p.string() + ": removed an incomplete last line (" +
                                             std::to_string(data.size() - keep) + " bytes) left by a crash");
                data.resize(keep);
            }
        }
        ::close(fd);
        std::size_t start = 0, lineno = 0, bad = 0;
        while (start < data.size()) {
            auto end = data.find('\n', start);
            if (end == std::string::npos) end = data.size();
            ++lineno;
            if (auto id = line_id(data.substr(start, end - start)))
                index_.set(*id, file_no(name));
            else
                ++bad;
            start = end + 1;
        }
        if (bad && log_)
            log_(LogLevel::Warn, p.string() + ": " + std::to_string(bad) + " of " + std::to_string(lineno) +
                                     " line(s) are not records with an id; left as they are");
    }

    bool rewrite_without(const std::string& file, const std::set<std::string>& ids, std::map<std::string, int>& counts,
                         std::string& error) {
        fs::path p = dir_ / file;
        fs::path tmp = dir_ / ("." + file + ".tmp");
        int in = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
        if (in < 0) {
            error = "cannot open " + p.string() + ": " + std::strerror(errno);
            return false;
        }
        std::string data;
        char buf[65536];
        ssize_t n;
        while ((n = ::read(in, buf, sizeof buf)) > 0) data.append(buf, static_cast<std::size_t>(n));
        ::close(in);
        std::string kept;
        kept.reserve(data.size());
        std::size_t start = 0;
        while (start < data.size()) {
            auto end = data.find('\n', start);
            if (end == std::string::npos) end = data.size();
            std::string line = data.substr(start, end - start);
            auto id = line_id(line);
            if (id && ids.count(*id))
                ++counts[*id];
            else
                kept += line + "\n";
            start = end + 1;
        }
        if (kept.empty()) {
            if (::unlink(p.c_str()) != 0 || !sync_dir(dir_)) {
                error = "cannot remove " + p.string() + ": " + std::strerror(errno);
                return false;
            }
            return true;
        }
        int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0) {
            error = "cannot write " + tmp.string() + ": " + std::strerror(errno);
            return false;
        }
        bool ok = write_all(out, kept) && ::fsync(out) == 0;
        int err = errno;
        ::close(out);
        if (!ok || ::rename(tmp.c_str(), p.c_str()) != 0 || !sync_dir(dir_)) {
            error = "cannot rewrite " + p.string() + ": " + std::strerror(ok ? errno : err);
            ::unlink(tmp.c_str());
            return false;
        }
        return true;
    }

    fs::path dir_;
    LogFn log_;
    // Record id -> its day file (in files_), for duplicates and erasure;
    // the ids of records not flushed yet are in it too (pending_ids_).
    detail::IdIndex index_;
    std::vector<std::string> files_;             // day files, by number
    std::map<std::string, std::string> pending_; // day file -> lines not yet flushed
    std::vector<std::string> pending_ids_;
    std::uint64_t duplicates_ = 0;
};

// ------------------------------------------------------------ stdout

class StdoutSink final : public FeedSink {
public:
    StdoutSink() { ::signal(SIGPIPE, SIG_IGN); }
    std::string describe() const override { return "standard output"; }
    bool write(const FeedRecord& r, std::string&) override {
        buf_ += r.body;
        buf_.push_back('\n');
        return true;
    }
    bool flush(std::string& error) override {
        bool ok = put(buf_, error);
        buf_.clear();
        return ok;
    }
    std::vector<EraseResult> erase(const std::vector<EraseNotice>& notices) override {
        std::vector<EraseResult> out;
        for (const auto& n : notices) {
            EraseResult r;
            std::string err;
            if (put(erase_line(n) + "\n", err)) {
                r.ok = true;
                r.receipt = receipt_prefix() + ": erase notice for record " + n.record_id +
                            " passed to the reader of standard output; switchboard-feed keeps no copy";
            } else {
                r.error = err;
            }
            out.push_back(std::move(r));
        }
        return out;
    }

private:
    static bool put(const std::string& data, std::string& error) {
        if (!write_all(STDOUT_FILENO, data)) {
            error = std::string("standard output: ") + std::strerror(errno);
            return false;
        }
        struct stat sb {};
        if (::fstat(STDOUT_FILENO, &sb) == 0 && S_ISREG(sb.st_mode) && ::fdatasync(STDOUT_FILENO) != 0) {
            error = std::string("standard output: ") + std::strerror(errno);
            return false;
        }
        return true;
    }
    std::string buf_;
};

// ------------------------------------------------------------ command

class CommandSink final : public FeedSink {
public:
    CommandSink(std::string command, std::chrono::milliseconds timeout, LogFn log)
        : command_(std::move(command)), timeout_(timeout), log_(std::move(log)) {
        if (command_.empty()) throw std::runtime_error("--exec: empty command");
        ::signal(SIGPIPE, SIG_IGN);
    }
    std::string describe() const override { return "command"; }

    bool write(const FeedRecord& r, std::string& error) override {
        std::string out;
        return run({"SB_FEED_EVENT=record", "SB_FEED_SEQ=" + std::to_string(r.seq), "SB_FEED_RECORD_ID=" + r.id},
                   r.body + "\n", out, error);
    }
    bool flush(std::string&) override { return true; } // each record was handed on by write()

    std::vector<EraseResult> erase(const std::vector<EraseNotice>& notices) override {
        std::vector<EraseResult> out;
        for (const auto& n : notices) {
            EraseResult r;
            std::string stdout_text;
            if (run({"SB_FEED_EVENT=erase", "SB_FEED_SEQ=" + std::to_string(n.seq), "SB_FEED_RECORD_ID=" + n.record_id},
                    erase_line(n) + "\n", stdout_text, r.error)) {
                r.ok = true;
                auto nl = stdout_text.find('\n');
                std::string first = stdout_text.substr(0, nl);
                for (char& c : first)
                    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
                r.receipt = first.empty() ? receipt_prefix() + ": erase notice for record " + n.record_id +
                                                " carried out by the department's command (exit status 0)"
                                          : first.substr(0, 2000);
            }
            out.push_back(std::move(r));
        }
        return out;
    }

private:
    // Runs the command with `input` on stdin; stdout is collected (at most
    // 64 KiB kept), stderr is the client's. true when it exits 0 in time.
    bool run(const std::vector<std::string>& vars, const std::string& input, std::string& out, std::string& error) {
        int in[2], outp[2];
        if (::pipe2(in, O_CLOEXEC) != 0) {
            error = "pipe failed";
            return false;
        }
        if (::pipe2(outp, O_CLOEXEC) != 0) {
            ::close(in[0]);
            ::close(in[1]);
            error = "pipe failed";
            return false;
        }
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
        posix_spawnattr_t attr;
        posix_spawnattr_init(&attr);
        sigset_t def;
        sigemptyset(&def);
        sigaddset(&def, SIGPIPE);
        posix_spawnattr_setsigdefault(&attr, &def);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
        std::vector<std::string> env_storage;
        for (char** e = environ; *e; ++e)
            if (std::strncmp(*e, "SB_FEED_", 8) != 0) env_storage.emplace_back(*e);
        for (const auto& v : vars) env_storage.push_back(v);
        std::vector<char*> env;
        for (auto& e : env_storage) env.push_back(e.data());
        env.push_back(nullptr);
        std::string sh = "/bin/sh", dash_c = "-c", cmd = command_;
        char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};
        pid_t pid = -1;
        int rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, env.data());
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        ::close(in[0]);
        ::close(outp[1]);
        if (rc != 0) {
            ::close(in[1]);
            ::close(outp[0]);
            error = std::string("cannot start /bin/sh: ") + std::strerror(rc);
            return false;
        }
        // Feed stdin and read stdout together (a command may answer before
        // it has read everything), bounded by the timeout.
        auto deadline = std::chrono::steady_clock::now() + timeout_;
        std::string_view pending = input;
        int wfd = in[1], rfd = outp[0];
        ::fcntl(wfd, F_SETFL, O_NONBLOCK);
        bool timed_out = false;
        while (rfd >= 0 || wfd >= 0) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                timed_out = true;
                break;
            }
            pollfd p[2];
            int np = 0;
            if (rfd >= 0) p[np++] = {rfd, POLLIN, 0};
            if (wfd >= 0) p[np++] = {wfd, POLLOUT, 0};
            if (::poll(p, static_cast<nfds_t>(np), static_cast<int>(std::min<long>(left.count(), 1000))) < 0 &&
                errno != EINTR)
                break;
            for (int i = 0; i < np; ++i) {
                if (p[i].fd == rfd && (p[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                    char buf[4096];
                    ssize_t n = ::read(rfd, buf, sizeof buf);
                    if (n > 0) {
                        if (out.size() < 65536) out.append(buf, static_cast<std::size_t>(n));
                    } else if (n == 0 || errno != EINTR) {
                        ::close(rfd);
                        rfd = -1;
                    }
                } else if (p[i].fd == wfd && (p[i].revents & (POLLOUT | POLLERR | POLLHUP))) {
                    ssize_t n = pending.empty() ? 0 : ::write(wfd, pending.data(), pending.size());
                    if (n > 0) pending.remove_prefix(static_cast<std::size_t>(n));
                    // Done, or the command closed its stdin (EPIPE): it did not want it all.
                    if (pending.empty() || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                        ::close(wfd);
                        wfd = -1;
                    }
                }
            }
        }
        if (wfd >= 0) ::close(wfd);
        if (rfd >= 0) ::close(rfd);
        int status = 0;
        for (;;) {
            pid_t r = ::waitpid(pid, &status, WNOHANG);
            if (r == pid) break;
            if (r < 0 && errno != EINTR) break;
            if (timed_out || std::chrono::steady_clock::now() >= deadline) {
                timed_out = true;
                ::kill(pid, SIGKILL);
                ::waitpid(pid, &status, 0);
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        if (timed_out) {
            error = "the command did not finish within " + std::to_string(timeout_.count()) + " ms (killed)";
            return false;
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
        error = WIFEXITED(status) ? "the command exited with status " + std::to_string(WEXITSTATUS(status))
                                  : "the command was killed by signal " + std::to_string(WTERMSIG(status));
        return false;
    }

    std::string command_;
    std::chrono::milliseconds timeout_;
    LogFn log_;
};

} // namespace

std::unique_ptr<FeedSink> make_directory_sink(const fs::path& dir, LogFn log) {
    return std::make_unique<DirectorySink>(dir, std::move(log));
}

std::unique_ptr<FeedSink> make_stdout_sink() { return std::make_unique<StdoutSink>(); }

std::unique_ptr<FeedSink> make_command_sink(std::string command, std::chrono::milliseconds timeout, LogFn log) {
    return std::make_unique<CommandSink>(std::move(command), timeout, std::move(log));
}

} // namespace switchboard::feed
