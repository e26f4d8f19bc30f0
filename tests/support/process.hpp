#pragma once

// Test support: run a real program (the daemon, the CLI) as a subprocess,
// read what it prints with bounded waits, signal it and collect its exit
// status. Header-only; POSIX.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;

namespace sbtest {

inline std::string env_or_fail(const char* name) {
    const char* v = std::getenv(name);
    if (!v) throw std::runtime_error(std::string("test environment variable ") + name + " is not set");
    return v;
}

inline std::string switchboard_binary() { return env_or_fail("SB_SWITCHBOARD"); }
inline std::string source_root() { return env_or_fail("SB_SOURCE_ROOT"); }
inline std::string build_root() { return env_or_fail("SB_BUILD_ROOT"); }
inline std::string plugin_dir() { return env_or_fail("SB_PLUGIN_DIR"); }

// A temporary directory removed at the end of the test.
// Asks `pred` every 50 ms until it holds or `timeout` has passed; its last
// answer. For conditions a test cannot be told about (files appearing, a
// daemon's output).
inline bool wait_until(const std::function<bool()>& pred,
                       std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return pred();
}

// The whole of a file ("" if it cannot be read).
inline std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// Every audit file under a data directory, concatenated ("" when none yet).
inline std::string audit_text(const std::filesystem::path& data_dir) {
    std::string all;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(data_dir / "audit", ec);
         !ec && it != std::filesystem::directory_iterator(); ++it)
        all += read_file(it->path());
    return all;
}

// How many times `needle` occurs in `text`.
inline std::size_t count_of(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
}

// The non-empty lines of a file.
inline std::size_t count_lines(const std::filesystem::path& file) {
    std::ifstream in(file);
    std::size_t n = 0;
    for (std::string l; std::getline(in, l);) n += !l.empty();
    return n;
}

// The lines of the audit trail under a data directory (every audit file).
inline std::vector<std::string> audit_lines(const std::filesystem::path& data_dir) {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(data_dir / "audit", ec);
         !ec && it != std::filesystem::directory_iterator(); ++it) {
        std::ifstream in(it->path());
        for (std::string l; std::getline(in, l);)
            if (!l.empty()) out.push_back(l);
    }
    return out;
}

struct TempDir {
    std::filesystem::path path;
    explicit TempDir(const char* prefix = "sb-test") {
        std::string tmpl = std::string("/tmp/") + prefix + "-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
        path = buf.data();
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::filesystem::path write(const std::string& name, const std::string& text) const {
        auto p = path / name;
        std::filesystem::create_directories(p.parent_path());
        std::ofstream(p) << text;
        return p;
    }
};

class Process {
public:
    // Starts argv[0] with the given arguments; stdout and stderr are captured
    // separately. `extra_env` entries are "NAME=value".
    explicit Process(std::vector<std::string> argv, std::vector<std::string> extra_env = {}) {
        int out[2], err[2];
        if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
            throw std::runtime_error("pipe failed");
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, out[1], 1);
        posix_spawn_file_actions_adddup2(&actions, err[1], 2);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        // The test's own variables win over inherited ones of the same name
        // (getenv() finds the first: an inherited value would shadow them).
        std::vector<std::string> env_storage;
        auto overridden = [&](std::string_view inherited) {
            for (const auto& e : extra_env) {
                auto eq = e.find('=');
                if (inherited.size() > eq && inherited.substr(0, eq + 1) == std::string_view(e).substr(0, eq + 1))
                    return true;
            }
            return false;
        };
        for (char** e = environ; *e; ++e)
            if (!overridden(*e)) env_storage.emplace_back(*e);
        for (auto& e : extra_env) env_storage.push_back(e);
        std::vector<char*> env;
        for (auto& e : env_storage) env.push_back(e.data());
        env.push_back(nullptr);
        int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), env.data());
        posix_spawn_file_actions_destroy(&actions);
        close(out[1]);
        close(err[1]);
        out_fd_ = out[0];
        err_fd_ = err[0];
        if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
    }
    ~Process() {
        if (!exited_) {
            kill(pid_, SIGKILL);
            int st;
            waitpid(pid_, &st, 0);
        }
        close(out_fd_);
        close(err_fd_);
    }
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

    pid_t pid() const { return pid_; }

    // Reads whatever is available, waiting at most `ms`.
    void pump(int ms) {
        pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
        if (::poll(fds, 2, ms) <= 0) return;
        char buf[4096];
        for (int i = 0; i < 2; ++i) {
            if (fds[i].revents & (POLLIN | POLLHUP)) {
                ssize_t n = read(fds[i].fd, buf, sizeof buf);
                if (n > 0) (i == 0 ? out_ : err_).append(buf, static_cast<std::size_t>(n));
            }
        }
    }

    // Waits until stderr (the log) matches `pattern`, up to `timeout`.
    // Returns the match and its groups ([0] is the whole match), or nullopt.
    std::optional<std::vector<std::string>> wait_for_log(const std::string& pattern,
                                                         std::chrono::milliseconds timeout) {
        std::regex re(pattern);
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            std::smatch m;
            if (std::regex_search(err_, m, re)) {
                std::vector<std::string> groups;
                for (const auto& g : m) groups.push_back(g.str());
                return groups;
            }
            if (exited_ || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
            if (poll_exit()) {
                for (int i = 0; i < 20; ++i) pump(5); // what it printed before exiting
                continue;
            }
            pump(50);
        }
    }

    void signal(int sig) { kill(pid_, sig); }

    // Waits for exit up to `timeout`; returns the exit code (128+N for a
    // signal), or nullopt if it is still running.
    std::optional<int> wait(std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!poll_exit()) {
            if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
            pump(20);
        }
        // Drain what is left.
        for (int i = 0; i < 20; ++i) pump(5);
        return code_;
    }

    const std::string& out() const { return out_; }
    const std::string& err() const { return err_; }

private:
    // Marks the process exited (once); true if it has.
    bool poll_exit() {
        if (exited_) return true;
        int st = 0;
        pid_t r = waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
            exited_ = true;
            code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        return exited_;
    }

    pid_t pid_ = -1;
    int out_fd_ = -1, err_fd_ = -1;
    std::string out_, err_;
    bool exited_ = false;
    int code_ = -1;
};

// Runs a command to completion (bounded) and returns (code, stdout, stderr).
// The HTTP port a daemon reports in its "core: ready" line (waiting for it,
// bounded); `scheme` is a regex for the scheme ("http", "https?").
inline int ready_port(Process& p, const std::string& scheme = "http",
                      std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    auto m = p.wait_for_log("INFO  core: ready: .* http " + scheme + R"(://127\.0\.0\.1:([0-9]+))", timeout);
    INFO(p.err());
    REQUIRE(m);
    return std::stoi((*m)[1]);
}

struct Result {
    int code;
    std::string out, err;
};

inline Result run(std::vector<std::string> argv, std::chrono::milliseconds timeout = std::chrono::seconds(60),
                  std::vector<std::string> extra_env = {}) {
    Process p(std::move(argv), std::move(extra_env));
    auto code = p.wait(timeout);
    if (!code) throw std::runtime_error("command did not finish in time");
    return {*code, p.out(), p.err()};
}

} // namespace sbtest
