// switchboard-feed: the reference department client of the Switchboard
// ZeroMQ feed (docs/departments.md, docs/feed-protocol.md).

#include "switchboard/feed_client.hpp"

#include <switchboard/detail/abi.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace feed = switchboard::feed;
namespace fs = std::filesystem;

namespace {

const char* kUsage =
    "usage: switchboard-feed --endpoint tcp://HOST:PORT --server-key FILE|Z85 --key FILE --state DIR\n"
    "                        (--out DIR | --stdout | --exec COMMAND)\n"
    "                        [--credit N] [--exec-timeout DURATION] [--log-level LEVEL] [--insecure]\n"
    "       switchboard-feed keygen NAME      writes NAME.key (secret, mode 0600) and NAME.pub\n"
    "\n"
    "Receives this department's records from a Switchboard zmq-feed destination,\n"
    "stores them, acknowledges them and carries out erase notices.\n"
    "\n"
    "  --endpoint E       the feed's endpoint, e.g. tcp://switchboard.council.local:5601\n"
    "  --server-key K     the server's public key: a file, or the 40 Z85 characters\n"
    "  --key FILE         this client's secret key file (from keygen); the public key is\n"
    "                     read from the .pub file beside it, or derived from the secret\n"
    "  --state DIR        where the acknowledged position is kept (one client per DIR)\n"
    "  --out DIR          write records as JSON lines, one file per UTC day (YYYY-MM-DD.jsonl)\n"
    "  --stdout           write records as JSON lines to standard output\n"
    "  --exec COMMAND     run COMMAND (with /bin/sh -c) once per record, the record on its stdin\n"
    "  --credit N         records in flight before acknowledgement, 1 to 10000 (default 1000)\n"
    "  --exec-timeout D   a command running longer is killed and retried (default 60s)\n"
    "  --log-level L      debug, info, warn or error (default info); logs go to stderr\n"
    "  --insecure         plaintext, no CURVE: only for test feeds on loopback\n";

feed::LogLevel g_level = feed::LogLevel::Info;
std::mutex g_log_mutex;

void log_line(feed::LogLevel level, std::string_view message) {
    if (level < g_level) return;
    static const char* names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    using namespace std::chrono;
    auto ms = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
    std::string line = sb::detail::format_time(ms) + " " + names[static_cast<int>(level)] + " feed: ";
    for (char c : message) line.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
    line.push_back('\n');
    std::lock_guard lock(g_log_mutex);
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
}

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

feed::FeedClient* g_client = nullptr;

extern "C" void on_signal(int) {
    if (g_client) g_client->stop();
}

int keygen(const std::string& name) {
    if (name.empty() || name[0] == '-') throw UsageError("keygen: expected a NAME (writes NAME.key and NAME.pub)");
    fs::path sec = name + ".key", pub = name + ".pub";
    for (const auto& p : {sec, pub})
        if (fs::exists(p)) throw std::runtime_error("keygen: " + p.string() + " exists; not overwriting a key");
    auto [pk, sk] = feed::generate_keypair();
    auto write = [](const fs::path& p, const std::string& text, mode_t mode) {
        int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0) throw std::runtime_error("keygen: cannot create " + p.string() + ": " + std::strerror(errno));
        bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
        ::close(fd);
        if (!ok) throw std::runtime_error("keygen: cannot write " + p.string());
    };
    write(sec, "# CURVE secret key: keep it on this machine only\n" + sk + "\n", 0600);
    write(pub, pk + "\n", 0644);
    std::cout << "wrote " << sec.string() << " (secret, mode 0600) and " << pub.string()
              << " (public: send this one to the council)\n";
    return 0;
}

std::optional<std::chrono::milliseconds> parse_duration(const std::string& s) {
    std::size_t i = 0;
    long long n = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc() || n < 0) return std::nullopt;
    i = static_cast<std::size_t>(end - s.data());
    std::string unit = s.substr(i);
    long long mult = unit == "ms" ? 1 : unit == "s" ? 1000 : unit == "m" ? 60'000 : unit == "h" ? 3'600'000 : 0;
    if (mult == 0) return std::nullopt;
    return std::chrono::milliseconds(n * mult);
}

int run(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (!args.empty() && args[0] == "keygen") {
        if (args.size() != 2) throw UsageError("keygen: expected exactly one NAME");
        return keygen(args[1]);
    }
    std::optional<std::string> endpoint, server_key, key, state, out, exec;
    bool to_stdout = false, insecure = false;
    std::uint32_t credit = 1000;
    std::chrono::milliseconds exec_timeout{60'000};
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= args.size()) throw UsageError(a + ": needs a value");
            return args[++i];
        };
        auto once = [&](std::optional<std::string>& slot) {
            if (slot) throw UsageError(a + ": given twice");
            slot = value();
        };
        if (a == "-h" || a == "--help") {
            std::cout << kUsage;
            return 0;
        } else if (a == "--endpoint") {
            once(endpoint);
        } else if (a == "--server-key") {
            once(server_key);
        } else if (a == "--key") {
            once(key);
        } else if (a == "--state") {
            once(state);
        } else if (a == "--out") {
            once(out);
        } else if (a == "--exec") {
            once(exec);
        } else if (a == "--stdout") {
            to_stdout = true;
        } else if (a == "--insecure") {
            insecure = true;
        } else if (a == "--credit") {
            std::string v = value();
            unsigned long n = 0;
            auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
            if (ec != std::errc() || end != v.data() + v.size() || n < 1 || n > 10000)
                throw UsageError("--credit: expected a whole number from 1 to 10000 (found '" + v + "')");
            credit = static_cast<std::uint32_t>(n);
        } else if (a == "--exec-timeout") {
            std::string v = value();
            auto d = parse_duration(v);
            if (!d || d->count() < 1)
                throw UsageError("--exec-timeout: expected a duration such as 30s or 500ms (found '" + v + "')");
            exec_timeout = *d;
        } else if (a == "--log-level") {
            std::string v = value();
            if (v == "debug") g_level = feed::LogLevel::Debug;
            else if (v == "info") g_level = feed::LogLevel::Info;
            else if (v == "warn") g_level = feed::LogLevel::Warn;
            else if (v == "error") g_level = feed::LogLevel::Error;
            else throw UsageError("--log-level: expected debug, info, warn or error (found '" + v + "')");
        } else {
            throw UsageError("unknown argument '" + a + "'");
        }
    }
    if (!endpoint) throw UsageError("--endpoint is required");
    if (endpoint->rfind("tcp://", 0) != 0 && endpoint->rfind("ipc://", 0) != 0)
        throw UsageError("--endpoint: expected tcp://HOST:PORT (found '" + *endpoint + "')");
    if (!state) throw UsageError("--state is required");
    int sinks = (out ? 1 : 0) + (to_stdout ? 1 : 0) + (exec ? 1 : 0);
    if (sinks != 1) throw UsageError("give exactly one of --out DIR, --stdout, --exec COMMAND");

    feed::ClientOptions o;
    o.endpoint = *endpoint;
    o.insecure = insecure;
    o.state_dir = *state;
    o.credit = credit;
    o.log = log_line;
    if (insecure) {
        if (server_key || key) throw UsageError("--insecure: plaintext feeds take no --server-key or --key");
        log_line(feed::LogLevel::Warn, "plaintext feed (--insecure): records travel unencrypted; tests only");
    } else {
        if (!server_key) throw UsageError("--server-key is required (or --insecure for a plaintext test feed)");
        if (!key) throw UsageError("--key is required (or --insecure for a plaintext test feed)");
        o.keys.server_public = feed::load_key(*server_key, "--server-key");
        if (!fs::is_regular_file(*key))
            throw UsageError("--key: " + *key + " is not a file (a secret key is never given on the command line)");
        o.keys.client_secret = feed::load_key(*key, "--key");
        struct stat sb {};
        if (::stat(key->c_str(), &sb) == 0 && (sb.st_mode & 0077))
            log_line(feed::LogLevel::Warn, "--key: " + *key + " is readable by other users; chmod 600 it");
        fs::path pub = fs::path(*key);
        pub = pub.extension() == ".key" ? fs::path(pub).replace_extension(".pub") : fs::path(*key + ".pub");
        if (fs::exists(pub)) {
            o.keys.client_public = feed::load_key(pub.string(), "public key");
            if (o.keys.client_public != feed::public_key_for(o.keys.client_secret))
                throw std::runtime_error("--key: " + pub.string() + " is not the public key of " + *key);
        } else {
            o.keys.client_public = feed::public_key_for(o.keys.client_secret);
        }
    }

    std::unique_ptr<feed::FeedSink> sink;
    if (out) sink = feed::make_directory_sink(*out, log_line);
    else if (to_stdout) sink = feed::make_stdout_sink();
    else sink = feed::make_command_sink(*exec, exec_timeout, log_line);

    feed::FeedClient client(std::move(o), std::move(sink));
    g_client = &client;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    int rc = client.run();
    g_client = nullptr;
    auto s = client.stats();
    log_line(feed::LogLevel::Info,
             "summary: " + std::to_string(s.records_written) + " record(s) written, " +
                 std::to_string(s.resends_dropped) + " resend(s) dropped, " + std::to_string(s.erased_sent) +
                 " erase notice(s) confirmed, " + std::to_string(s.malformed) + " malformed message(s), position " +
                 std::to_string(s.acked));
    return rc;
}

} // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const UsageError& e) {
        std::fprintf(stderr, "switchboard-feed: %s (see switchboard-feed --help)\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "switchboard-feed: %s\n", e.what());
        return 1;
    }
}
