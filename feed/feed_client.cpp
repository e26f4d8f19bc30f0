#include "switchboard/feed_client.hpp"

#include "feed_json.hpp"

#include <switchboard/detail/record_data.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace switchboard::feed {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ---------------------------------------------------------------- keys

namespace {

bool is_z85_key(std::string_view s) {
    if (s.size() != 40) return false;
    char text[41];
    std::memcpy(text, s.data(), 40);
    text[40] = '\0';
    std::uint8_t bin[32];
    return zmq_z85_decode(bin, text) != nullptr;
}

std::string trim(std::string_view s) {
    auto b = s.find_first_not_of(" \t\r\n");
    if (b == std::string_view::npos) return {};
    auto e = s.find_last_not_of(" \t\r\n");
    return std::string(s.substr(b, e - b + 1));
}

} // namespace

std::string load_key(const std::string& text, const std::string& what) {
    if (is_z85_key(text) && !fs::exists(text)) return text;
    std::ifstream in(text);
    if (!in) {
        if (text.size() == 40)
            throw std::runtime_error(what + ": not a valid Z85 key (40 characters of the Z85 alphabet) "
                                            "and no such file");
        throw std::runtime_error(what + ": cannot read key file " + text + ": " + std::strerror(errno));
    }
    std::string line, key;
    int keys = 0;
    while (std::getline(in, line)) {
        auto t = trim(line);
        if (t.empty() || t[0] == '#') continue;
        key = t;
        ++keys;
    }
    if (keys != 1)
        throw std::runtime_error(what + ": key file " + text + " must hold exactly one key line (found " +
                                 std::to_string(keys) + ")");
    if (!is_z85_key(key))
        throw std::runtime_error(what + ": key file " + text +
                                 " does not hold a Z85 key (40 characters of the Z85 alphabet)");
    return key;
}

std::string public_key_for(const std::string& secret_z85) {
    if (!is_z85_key(secret_z85)) throw std::runtime_error("not a Z85 secret key");
    char pub[41];
    if (zmq_curve_public(pub, secret_z85.c_str()) != 0)
        throw std::runtime_error(std::string("cannot derive the public key: ") + zmq_strerror(zmq_errno()));
    return std::string(pub, 40);
}

std::pair<std::string, std::string> generate_keypair() {
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0)
        throw std::runtime_error(std::string("cannot make a CURVE key pair: ") + zmq_strerror(zmq_errno()));
    return {std::string(pub, 40), std::string(sec, 40)};
}

// ---------------------------------------------------------------- position

namespace {
const char* kPositionFile = "position";

void fsync_dir(const fs::path& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open directory " + dir.string() + ": " + std::strerror(errno));
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) throw std::runtime_error("cannot sync directory " + dir.string() + ": " + std::strerror(err));
}
} // namespace

Position read_position_file(const fs::path& state_dir) {
    fs::path p = state_dir / kPositionFile;
    std::ifstream in(p);
    if (!in) {
        if (!fs::exists(p)) return {};
        throw std::runtime_error("cannot read " + p.string() + ": " + std::strerror(errno));
    }
    std::stringstream ss;
    ss << in.rdbuf();
    std::string t = trim(ss.str());
    // "S" (before feed ids) or "S FEED".
    std::string feed;
    if (auto sp = t.find(' '); sp != std::string::npos) {
        feed = trim(std::string_view(t).substr(sp + 1));
        t.resize(sp);
    }
    std::int64_t v = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    bool feed_ok = feed.size() <= 64 && std::all_of(feed.begin(), feed.end(), [](char c) {
                       return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                              c == '-' || c == '_';
                   });
    if (t.empty() || ec != std::errc() || end != t.data() + t.size() || v < 0 || !feed_ok)
        throw std::runtime_error(p.string() + ": not a position (expected a non-negative integer, then "
                                              "optionally the feed id); remove it only to receive every record "
                                              "the server still holds again");
    return {v, feed};
}

std::int64_t read_position(const fs::path& state_dir) { return read_position_file(state_dir).acked; }

void write_position(const fs::path& state_dir, std::int64_t acked, const std::string& feed) {
    fs::path tmp = state_dir / (std::string(kPositionFile) + ".tmp");
    fs::path dst = state_dir / kPositionFile;
    std::string text = std::to_string(acked) + (feed.empty() ? "" : " " + feed) + "\n";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(errno));
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
    int err = errno;
    ::close(fd);
    if (!ok) throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(err));
    if (::rename(tmp.c_str(), dst.c_str()) != 0)
        throw std::runtime_error("cannot rename " + tmp.string() + ": " + std::strerror(errno));
    fsync_dir(state_dir);
}

// ---------------------------------------------------------------- client

namespace {

std::atomic<unsigned> monitor_counter{0};

// A libzmq socket closed on scope exit.
struct Socket {
    void* s = nullptr;
    Socket() = default;
    Socket(void* ctx, int type) : s(zmq_socket(ctx, type)) {
        if (!s) throw std::runtime_error(std::string("zmq_socket: ") + zmq_strerror(zmq_errno()));
    }
    ~Socket() { close(); }
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    void close(int linger_ms = 0) {
        if (!s) return;
        zmq_setsockopt(s, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
        zmq_close(s);
        s = nullptr;
    }
    void set_int(int opt, int v) {
        if (zmq_setsockopt(s, opt, &v, sizeof v) != 0)
            throw std::runtime_error(std::string("zmq_setsockopt: ") + zmq_strerror(zmq_errno()));
    }
    void set_key(int opt, const std::string& z85) {
        // Z85 text with its terminating NUL (41 bytes), as libzmq takes it.
        if (zmq_setsockopt(s, opt, z85.c_str(), z85.size() + 1) != 0)
            throw std::runtime_error(std::string("zmq_setsockopt (CURVE key): ") + zmq_strerror(zmq_errno()));
    }
};

// Receives all frames of one message without waiting; false if none.
bool recv_frames(void* s, std::vector<std::string>& frames) {
    frames.clear();
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int rc = zmq_msg_recv(&m, s, frames.empty() ? ZMQ_DONTWAIT : 0);
        if (rc < 0) {
            zmq_msg_close(&m);
            return false;
        }
        frames.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
        bool more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (!more) return true;
    }
}

bool send_message(void* s, std::string_view type, const std::string& body) {
    if (zmq_send(s, type.data(), type.size(), ZMQ_SNDMORE) < 0) return false;
    return zmq_send(s, body.data(), body.size(), 0) >= 0;
}

std::string one_line(std::string_view s, std::size_t max) {
    std::string out;
    for (char c : s.substr(0, max)) {
        unsigned char u = static_cast<unsigned char>(c);
        out.push_back(u < 0x20 || u == 0x7f ? ' ' : c);
    }
    if (s.size() > max) out += "…";
    return out;
}

// A message type as it may be logged: short printable ASCII, else a count.
std::string printable_type(std::string_view t) {
    if (t.size() > 16) return "(" + std::to_string(t.size()) + "-byte type)";
    for (char c : t)
        if (c < 0x21 || c > 0x7e) return "(non-ASCII type)";
    return std::string(t);
}

} // namespace

struct FeedClient::Impl {
    ClientOptions opt;
    std::unique_ptr<FeedSink> sink;
    void* ctx = nullptr;
    int lock_fd = -1;
    int wake[2] = {-1, -1};
    std::atomic<bool> stopping{false};
    mutable std::mutex stats_mutex;
    ClientStats st;
    std::int64_t acked = 0;
    std::string feed_id; // the numbering `acked` belongs to (WELCOME "feed"); "" before the first
    // The version asked for in HELLO: kProtocolVersion, or kProtocolOldest
    // after a server refused it (a server not yet upgraded).
    int protocol = kProtocolVersion;

    enum class End { Stopped, Retry, Fatal };

    void log(LogLevel l, const std::string& m) const {
        if (opt.log) opt.log(l, m);
    }
    template <class F> void count(F f) {
        std::lock_guard lock(stats_mutex);
        f(st);
    }

    ClientStats snapshot() const {
        std::lock_guard lock(stats_mutex);
        return st;
    }

    bool wait_wake(milliseconds d) {
        pollfd p{wake[0], POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(d.count()));
        return stopping.load();
    }

    End session();
    End drain(void* sock, bool& welcomed);
};

FeedClient::FeedClient(ClientOptions options, std::unique_ptr<FeedSink> sink) : impl_(std::make_unique<Impl>()) {
    auto& o = options;
    if (!sink) throw std::invalid_argument("no sink");
    if (o.endpoint.rfind("tcp://", 0) != 0 && o.endpoint.rfind("ipc://", 0) != 0)
        throw std::runtime_error("endpoint '" + o.endpoint + "': expected tcp://HOST:PORT (or ipc://PATH)");
    if (o.credit < 1 || o.credit > 10000)
        throw std::runtime_error("credit must be 1 to 10000 (found " + std::to_string(o.credit) + ")");
    if (!o.insecure) {
        if (!is_z85_key(o.keys.server_public)) throw std::runtime_error("server public key is not a Z85 key");
        if (!is_z85_key(o.keys.client_secret)) throw std::runtime_error("client secret key is not a Z85 key");
        if (o.keys.client_public.empty()) o.keys.client_public = public_key_for(o.keys.client_secret);
        if (public_key_for(o.keys.client_secret) != o.keys.client_public)
            throw std::runtime_error("client public key does not belong to the client secret key");
    }
    if (o.reconnect_min.count() < 1 || o.reconnect_max < o.reconnect_min)
        throw std::runtime_error("reconnect backoff: need 1 ms <= min <= max");
    if (o.state_dir.empty()) throw std::runtime_error("no state directory");
    std::error_code ec;
    fs::create_directories(o.state_dir, ec);
    if (ec) throw std::runtime_error("state directory " + o.state_dir.string() + ": " + ec.message());
    fs::path lock = o.state_dir / "lock";
    int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("cannot open " + lock.string() + ": " + std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        throw std::runtime_error("state directory " + o.state_dir.string() +
                                 " is in use by another client (lock file " + lock.string() + ")");
    }
    impl_->lock_fd = fd;
    Position pos = read_position_file(o.state_dir);
    impl_->acked = pos.acked;
    impl_->feed_id = pos.feed;
    impl_->st.acked = impl_->acked;
    if (::pipe2(impl_->wake, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error("pipe failed");
    impl_->ctx = zmq_ctx_new();
    if (!impl_->ctx) throw std::runtime_error("zmq_ctx_new failed");
    // Refuse a malformed endpoint now rather than retrying it forever.
    {
        Socket probe(impl_->ctx, ZMQ_DEALER);
        if (zmq_connect(probe.s, o.endpoint.c_str()) != 0)
            throw std::runtime_error("endpoint '" + o.endpoint + "': " + zmq_strerror(zmq_errno()));
    }
    impl_->opt = std::move(options);
    impl_->sink = std::move(sink);
}

FeedClient::~FeedClient() {
    if (impl_->ctx) zmq_ctx_term(impl_->ctx);
    for (int fd : impl_->wake)
        if (fd >= 0) ::close(fd);
    if (impl_->lock_fd >= 0) ::close(impl_->lock_fd);
}

void FeedClient::stop() noexcept {
    impl_->stopping.store(true);
    char c = 1;
    [[maybe_unused]] auto n = ::write(impl_->wake[1], &c, 1);
}

ClientStats FeedClient::stats() const {
    std::lock_guard lock(impl_->stats_mutex);
    return impl_->st;
}

std::int64_t FeedClient::position() const { return stats().acked; }

int FeedClient::run() {
    auto& d = *impl_;
    d.log(LogLevel::Info, "feed client for " + d.opt.endpoint + " (" + (d.opt.insecure ? "plaintext" : "CURVE") +
                              "), position " + std::to_string(d.acked) + ", credit " +
                              std::to_string(d.opt.credit) + ", records to " + d.sink->describe());
    milliseconds backoff = d.opt.reconnect_min;
    while (!d.stopping.load()) {
        auto before = d.snapshot().sessions;
        Impl::End end;
        try {
            end = d.session();
        } catch (const std::exception& e) {
            d.log(LogLevel::Error, std::string("session failed: ") + e.what());
            end = Impl::End::Retry;
        }
        if (end == Impl::End::Fatal) return 1;
        if (end == Impl::End::Stopped || d.stopping.load()) break;
        if (d.snapshot().sessions != before) backoff = d.opt.reconnect_min;
        d.log(LogLevel::Info, "reconnecting in " + std::to_string(backoff.count()) + " ms");
        if (d.wait_wake(backoff)) break;
        backoff = std::min(backoff * 2, d.opt.reconnect_max);
    }
    d.log(LogLevel::Info, "stopped at position " + std::to_string(d.acked));
    return 0;
}

FeedClient::Impl::End FeedClient::Impl::session() {
    Socket sock(ctx, ZMQ_DEALER);
    sock.set_int(ZMQ_LINGER, 0);
    sock.set_int(ZMQ_SNDTIMEO, 5000);
    sock.set_int(ZMQ_RECONNECT_IVL, static_cast<int>(opt.reconnect_min.count()));
    sock.set_int(ZMQ_RECONNECT_IVL_MAX, static_cast<int>(opt.reconnect_max.count()));
    sock.set_int(ZMQ_HEARTBEAT_IVL, static_cast<int>(opt.heartbeat_interval.count()));
    sock.set_int(ZMQ_HEARTBEAT_TIMEOUT, static_cast<int>(opt.heartbeat_timeout.count()));
    sock.set_int(ZMQ_HEARTBEAT_TTL, static_cast<int>(opt.heartbeat_timeout.count()));
    if (!opt.insecure) {
        sock.set_key(ZMQ_CURVE_SERVERKEY, opt.keys.server_public);
        sock.set_key(ZMQ_CURVE_PUBLICKEY, opt.keys.client_public);
        sock.set_key(ZMQ_CURVE_SECRETKEY, opt.keys.client_secret);
    }
    std::string mon_addr = "inproc://switchboard-feed-monitor-" + std::to_string(++monitor_counter);
    if (zmq_socket_monitor(sock.s, mon_addr.c_str(),
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_CONNECTED) != 0)
        throw std::runtime_error(std::string("zmq_socket_monitor: ") + zmq_strerror(zmq_errno()));
    Socket mon(ctx, ZMQ_PAIR);
    struct MonitorStop {
        void* s;
        ~MonitorStop() { zmq_socket_monitor(s, nullptr, 0); }
    } monitor_stop{sock.s};
    if (zmq_connect(mon.s, mon_addr.c_str()) != 0)
        throw std::runtime_error(std::string("monitor connect: ") + zmq_strerror(zmq_errno()));
    if (zmq_connect(sock.s, opt.endpoint.c_str()) != 0) {
        log(LogLevel::Error, "cannot connect to " + opt.endpoint + ": " + zmq_strerror(zmq_errno()));
        return End::Fatal;
    }

    // HELLO waits in the socket's queue until the connection is up.
    std::string hello = "{\"protocol\":" + std::to_string(protocol) + ",\"acked\":" + std::to_string(acked) +
                        ",\"credit\":" + std::to_string(opt.credit) +
                        (feed_id.empty() ? std::string() : ",\"feed\":\"" + feed_id + "\"") + "}";
    if (!send_message(sock.s, "HELLO", hello)) {
        log(LogLevel::Warn, std::string("cannot send HELLO: ") + zmq_strerror(zmq_errno()));
        return End::Retry;
    }

    bool handshake_ok = false, welcomed = false, retry_logged = false;
    std::optional<Clock::time_point> welcome_deadline;
    for (;;) {
        zmq_pollitem_t items[3] = {{sock.s, 0, ZMQ_POLLIN, 0}, {mon.s, 0, ZMQ_POLLIN, 0}, {nullptr, wake[0], ZMQ_POLLIN, 0}};
        long timeout = 1000;
        if (welcome_deadline && !welcomed) { // (past it, a session would poll without waiting)
            auto left = std::chrono::duration_cast<milliseconds>(*welcome_deadline - Clock::now()).count();
            timeout = std::clamp<long>(left, 0, 1000);
        }
        if (zmq_poll(items, 3, timeout) < 0 && zmq_errno() != EINTR) {
            log(LogLevel::Error, std::string("zmq_poll: ") + zmq_strerror(zmq_errno()));
            return End::Retry;
        }
        if (stopping.load()) {
            if (welcomed) {
                send_message(sock.s, "BYE", "{}");
                sock.close(1000); // let BYE go out
            }
            return End::Stopped;
        }
        if (items[1].revents & ZMQ_POLLIN) {
            std::vector<std::string> ev;
            while (recv_frames(mon.s, ev)) {
                if (ev.size() < 2 || ev[0].size() < 6) continue;
                std::uint16_t event;
                std::uint32_t value;
                std::memcpy(&event, ev[0].data(), 2);
                std::memcpy(&value, ev[0].data() + 2, 4);
                switch (event) {
                case ZMQ_EVENT_CONNECTED:
                    log(LogLevel::Debug, "connected to " + opt.endpoint);
                    break;
                case ZMQ_EVENT_CONNECT_RETRIED:
                    if (!retry_logged) log(LogLevel::Warn, opt.endpoint + " not reachable yet; retrying");
                    retry_logged = true;
                    break;
                case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
                    handshake_ok = true;
                    welcome_deadline = Clock::now() + opt.welcome_timeout;
                    break;
                case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
                    count([](ClientStats& s) { ++s.handshake_failures; });
                    log(LogLevel::Error, "the server at " + opt.endpoint + " refused our key (ZAP status " +
                                             std::to_string(value) +
                                             "): send the council this client's public key");
                    return End::Retry;
                case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
                case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                    count([](ClientStats& s) { ++s.handshake_failures; });
                    log(LogLevel::Error, "handshake with " + opt.endpoint +
                                             " failed: check the server public key and that both sides use " +
                                             (opt.insecure ? "plaintext" : "CURVE"));
                    return End::Retry;
                case ZMQ_EVENT_DISCONNECTED:
                    if (!handshake_ok) {
                        count([](ClientStats& s) { ++s.handshake_failures; });
                        log(LogLevel::Error, "the server at " + opt.endpoint +
                                                 " closed the connection during the handshake: check the server "
                                                 "public key, and that the council has listed this client's key");
                    } else {
                        log(LogLevel::Warn, "disconnected from " + opt.endpoint);
                    }
                    return End::Retry;
                default:
                    break;
                }
            }
        }
        if (items[0].revents & ZMQ_POLLIN) {
            End e = drain(sock.s, welcomed);
            if (e != End::Stopped) return e; // Stopped here means "carry on"
        }
        if (!welcomed && welcome_deadline && Clock::now() >= *welcome_deadline) {
            log(LogLevel::Warn, "no WELCOME from " + opt.endpoint + " within " +
                                    std::to_string(opt.welcome_timeout.count()) + " ms of the handshake");
            return End::Retry;
        }
    }
}

// Reads what the socket holds (bounded), writes records, flushes, persists
// the position, ACKs, then carries out erase notices. Returns Stopped to
// mean "session continues".
FeedClient::Impl::End FeedClient::Impl::drain(void* sock, bool& welcomed) {
    std::vector<std::string> frames;
    std::vector<EraseNotice> erases;
    std::int64_t last = acked; // highest seq taken by the sink in this batch
    bool reack = false, sink_failed = false;
    std::size_t taken = 0, messages = 0;
    const std::size_t max_messages = static_cast<std::size_t>(opt.credit) + 1000;
    End end = End::Stopped;

    auto malformed = [&](const std::string& what) {
        count([](ClientStats& s) { ++s.malformed; });
        log(LogLevel::Warn, "malformed message from the server: " + what + "; ignored");
    };

    // One RECORD body (`text`, its members `body`): written to the sink
    // unless it is a resend. False when the drain must stop (the sink
    // failed, or a REJECT could not be sent).
    auto take_record = [&](const json::Object& body, std::string_view text) -> bool {
        auto seq = body.get_int("seq");
        auto id = body.get_string("id");
        if (seq && *seq > last && (!id || id->empty() || !body.has_object("record"))) {
            // A record this client can never read: refused for good, so
            // that it is not resent for ever (the server dead-letters
            // it). Sent at once, before any later position is persisted.
            std::string why = !id || id->empty() ? "RECORD without a string id" : "RECORD without a record object";
            count([](ClientStats& s) { ++s.malformed; ++s.rejected; });
            log(LogLevel::Warn, "record seq " + std::to_string(*seq) + " cannot be read (" + why + "); rejected");
            if (!send_message(sock, "REJECT", "{\"seq\":" + std::to_string(*seq) + ",\"reason\":\"" + why + "\"}")) {
                log(LogLevel::Warn, std::string("cannot send REJECT: ") + zmq_strerror(zmq_errno()));
                end = End::Retry;
                return false;
            }
            return true;
        }
        if (!seq || *seq < 1 || !id || id->empty() || !body.has_object("record")) {
            malformed(std::string("RECORD without ") +
                      (!seq || *seq < 1 ? "a positive integer seq" : !id || id->empty() ? "a string id" : "a record object") +
                      (seq ? " (seq " + std::to_string(*seq) + ")" : ""));
            return true;
        }
        if (*seq <= last) {
            count([](ClientStats& s) { ++s.resends_dropped; });
            reack = true;
            return true;
        }
        FeedRecord r{*seq, *id, json::one_line(text)};
        std::string werr;
        if (!sink->write(r, werr)) {
            count([](ClientStats& s) { ++s.sink_failures; });
            log(LogLevel::Error, "cannot write record seq " + std::to_string(*seq) + " (" + one_line(*id, 100) + ") to " +
                                     sink->describe() + ": " + werr);
            sink_failed = true;
            return false;
        }
        last = *seq;
        ++taken;
        return true;
    };

    while (messages < max_messages && !sink_failed && end == End::Stopped && recv_frames(sock, frames)) {
        ++messages;
        if (frames.size() != 2) {
            malformed(std::to_string(frames.size()) + " frame(s), expected 2 (type, JSON body)");
            continue;
        }
        const std::string& type = frames[0];
        std::string err;
        auto body = json::parse_object(frames[1], err);
        if (!body) {
            malformed(printable_type(type) + " body: " + err);
            continue;
        }
        if (type == "RECORD") {
            if (!take_record(*body, frames[1])) break;
        } else if (type == "RECORDS") {
            // Version 2: several RECORD bodies in one message, in order.
            auto items = body->get_items("records");
            if (!items) {
                malformed("RECORDS without a records array");
                continue;
            }
            for (const json::Object::Item& item : *items) {
                if (!item.members) {
                    malformed("RECORDS with an element that is not an object");
                    continue;
                }
                if (!take_record(*item.members, item.text)) break;
            }
        } else if (type == "ERASE") {
            auto notice = body->get_string("notice");
            auto record_id = body->get_string("record_id");
            if (!notice || notice->empty() || !record_id || record_id->empty()) {
                malformed("ERASE without " + std::string(!notice || notice->empty() ? "a notice" : "a record_id"));
                continue;
            }
            EraseNotice n;
            n.notice = *notice;
            n.record_id = *record_id;
            n.seq = body->get_int("seq").value_or(0);
            n.reason = body->get_string("reason").value_or("");
            erases.push_back(std::move(n));
        } else if (type == "WELCOME") {
            auto proto = body->get_int("protocol");
            if (!proto || *proto != protocol) {
                log(LogLevel::Error, "the server answered with protocol " +
                                         (proto ? std::to_string(*proto) : std::string("(missing)")) +
                                         "; this client asked for " + std::to_string(protocol));
                end = End::Retry;
                break;
            }
            auto next = body->get_int("next");
            auto dest = body->get_string("destination").value_or("?");
            auto feed = body->get_string("feed").value_or("");
            bool feed_ok = !feed.empty() && feed.size() <= 64 && std::all_of(feed.begin(), feed.end(), [](char c) {
                               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                      c == '-' || c == '_';
                           });
            if (!feed.empty() && !feed_ok) malformed("WELCOME with a feed id that is not 1-64 letters, digits, - or _");
            if (feed_ok && feed != feed_id) {
                if (!feed_id.empty()) {
                    // The server's numbering is not the one our position is
                    // in (its journal was started afresh): it did not take
                    // our `acked`, and sends from its lowest record held.
                    log(LogLevel::Warn, "the server's feed id is " + feed + ", this client's position " +
                                            std::to_string(acked) + " was in feed " + feed_id +
                                            ": the feed was reset; receiving it from the start");
                    count([](ClientStats& s) { ++s.feed_resets; });
                    acked = 0;
                    last = 0;
                }
                try {
                    write_position(opt.state_dir, acked, feed);
                } catch (const std::exception& e) {
                    log(LogLevel::Error, std::string("cannot persist the position: ") + e.what());
                    end = End::Retry;
                    break;
                }
                feed_id = feed;
                count([&](ClientStats& s) { s.acked = acked; });
            }
            welcomed = true;
            count([](ClientStats& s) { ++s.sessions; });
            std::string m = "session with destination " + one_line(dest, 64) + ": position " +
                            std::to_string(acked) + ", server's next " +
                            (next ? std::to_string(*next) : std::string("(not given)"));
            if (next && *next > acked + 1)
                m += "; " + std::to_string(*next - acked - 1) +
                     " sequence number(s) expired or were erased before delivery";
            log(LogLevel::Info, m);
            if (next && *next <= acked && !feed_ok)
                log(LogLevel::Warn, "the server's next sequence number " + std::to_string(*next) +
                                        " is at or below this client's position " + std::to_string(acked) +
                                        ": records up to it are taken as resends and dropped; if the council "
                                        "reset the feed, stop the client and remove the position file");
        } else if (type == "ERROR") {
            count([](ClientStats& s) { ++s.server_errors; });
            bool fatal = body->get_bool("fatal").value_or(false);
            auto about = body->get_string("type");
            log(fatal ? LogLevel::Error : LogLevel::Warn,
                "the server reports an error" + (about ? " about " + printable_type(*about) : std::string()) + ": " +
                    one_line(body->get_string("error").value_or("(no text)"), 300) +
                    (fatal ? "; the session is over, starting a new one" : ""));
            if (fatal) {
                // No session on this connection (any more): a new connection
                // and HELLO, after what was taken so far is stored. A server
                // that refused our version gets the oldest in that HELLO.
                if (!welcomed && about && *about == "HELLO" && protocol > kProtocolOldest &&
                    body->get_string("error").value_or("").find("protocol") != std::string::npos) {
                    log(LogLevel::Warn, "the server does not speak protocol " + std::to_string(protocol) +
                                            "; using protocol " + std::to_string(kProtocolOldest) +
                                            " (one record a message)");
                    protocol = kProtocolOldest;
                }
                end = End::Retry;
                break;
            }
        } else {
            malformed("unknown type " + printable_type(type));
        }
    }

    if (taken > 0) {
        std::string ferr;
        if (!sink->flush(ferr)) {
            count([](ClientStats& s) { ++s.sink_failures; });
            log(LogLevel::Error, "cannot store " + std::to_string(taken) + " record(s) in " + sink->describe() +
                                     ": " + ferr + "; not acknowledged, they will be resent");
            return End::Retry;
        }
        try {
            write_position(opt.state_dir, last, feed_id);
        } catch (const std::exception& e) {
            count([](ClientStats& s) { ++s.sink_failures; });
            log(LogLevel::Error, std::string("cannot persist the position: ") + e.what());
            return End::Retry;
        }
        acked = last;
        count([&](ClientStats& s) {
            s.records_written += taken;
            s.acked = last;
        });
        reack = true;
    }
    if (reack) {
        if (!send_message(sock, "ACK", "{\"upto\":" + std::to_string(acked) + "}")) {
            log(LogLevel::Warn, std::string("cannot send ACK: ") + zmq_strerror(zmq_errno()));
            return End::Retry;
        }
        count([](ClientStats& s) { ++s.acks_sent; });
    }
    if (!erases.empty()) {
        count([&](ClientStats& s) { s.erase_notices += erases.size(); });
        auto results = sink->erase(erases);
        for (std::size_t i = 0; i < erases.size(); ++i) {
            const auto& n = erases[i];
            const EraseResult r = i < results.size() ? results[i] : EraseResult{false, {}, "no result from the sink"};
            if (!r.ok) {
                count([](ClientStats& s) { ++s.sink_failures; });
                log(LogLevel::Error, "erase notice " + one_line(n.notice, 100) + " for record " + one_line(n.record_id, 100) +
                                         " not carried out: " + r.error + "; it will come again");
                continue;
            }
            std::string out = "{\"notice\":";
            sb::detail::append_json_string(out, n.notice);
            out += ",\"record_id\":";
            sb::detail::append_json_string(out, n.record_id);
            out += ",\"receipt\":";
            sb::detail::append_json_string(out, r.receipt);
            out += "}";
            if (!send_message(sock, "ERASED", out)) {
                log(LogLevel::Warn, std::string("cannot send ERASED: ") + zmq_strerror(zmq_errno()));
                return End::Retry;
            }
            count([](ClientStats& s) { ++s.erased_sent; });
            log(LogLevel::Info, "erase notice " + one_line(n.notice, 100) + " (" +
                                    (n.reason.empty() ? "?" : one_line(n.reason, 32)) + ") for record " +
                                    one_line(n.record_id, 100) + " carried out and confirmed");
        }
    }
    if (sink_failed) return End::Retry;
    return end;
}

} // namespace switchboard::feed
