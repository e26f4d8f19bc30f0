// zmq-feed: the server side of a department feed, protocol versions 1 and 2
// (docs/feed-protocol.md). One instance is one department on one endpoint.
//
// Threads: deliver() (queue thread) and erase() (retention thread) only put
// work into the shared state under `mutex_` and wake the I/O thread through
// an eventfd. The I/O thread owns every ZeroMQ socket of the instance's own
// context: the ROUTER the department connects to, and the ZAP handler
// (inproc://zeromq.zap.01, bound before the ROUTER so that no handshake can
// happen without it). It sends within the client's credit, takes ACKs and
// ERASED answers, resends on HELLO and on ack_timeout, and reports each
// completion through host->complete (after dropping its lock).
//
// Nothing is dropped at a high-water mark: the ROUTER is ZMQ_ROUTER_MANDATORY
// and sends never block; a send that cannot be queued (EAGAIN) is retried at
// the next pass, one to a peer that has gone (EHOSTUNREACH) ends the session
// and everything in flight is sent again after the next HELLO. Unacknowledged
// records stay in memory only as long as the host's delivery window (the
// destination's `batch`); the backlog stays in the host's outbox on disk.
#include <switchboard/plugin.hpp>

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

// The versions spoken: 2 is 1 with RECORDS, several records in one message.
constexpr int kProtocolMin = 1;
constexpr int kProtocolMax = 2;
// A RECORDS message carries at most this many records, or about this many
// bytes (one record larger than that goes alone). Each message costs both
// sides far more than its bytes (CURVE boxes every frame, ZeroMQ handles
// every message): a record a message cost 7.7 µs of CPU per record on this
// machine, 64 records a message 1.9 (docs/performance.md).
constexpr std::size_t kBatchRecords = 256;
constexpr std::size_t kBatchBytes = 256 * 1024;
constexpr std::int64_t kMaxCredit = 10000;
constexpr int kMaxMessage = 64 * 1024;   // client messages are small; larger ones drop the peer
constexpr std::size_t kMaxReceipt = 1024; // bytes of free text kept in the audit trail
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr const char* kZapDomain = "switchboard";
constexpr const char* kErasedPrefix = "erased/"; // state key prefix: confirmed notices
constexpr const char* kFeedIdKey = "feed_id";     // state key: this feed's numbering (WELCOME "feed")
constexpr std::size_t kMaxReason = 256;           // bytes of a REJECT reason kept with the dead letter

std::int64_t steady_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

std::string zmq_error() { return zmq_strerror(zmq_errno()); }

// A Z85 CURVE key (40 characters) decoded; nullopt if it is not one.
std::optional<std::array<std::uint8_t, 32>> decode_key(const std::string& z85) {
    std::array<std::uint8_t, 32> out{};
    if (z85.size() != 40 || !zmq_z85_decode(out.data(), z85.c_str())) return std::nullopt;
    return out;
}

// The public keys in a key file (`client_key_files`): one Z85 key a line, as
// `switchboard keygen` writes NAME.pub; blank lines and '#' comments are
// skipped. Throws naming the config key, the file and the line.
std::vector<std::string> read_key_file(const std::string& path, std::size_t index) {
    const std::string where = "config key 'client_key_files'[" + std::to_string(index) + "]: " + path;
    if (path.size() > 4 && path.compare(path.size() - 4, 4, ".key") == 0)
        throw sb::Error(SB_ERR_INVALID, where + " looks like a secret key file; list the department's .pub");
    std::ifstream in(path);
    if (!in) throw sb::Error(SB_ERR_INVALID, where + ": cannot read it: " + std::strerror(errno));
    std::vector<std::string> keys;
    std::string line;
    for (int n = 1; std::getline(in, line) && n <= 1000; ++n) {
        auto b = line.find_first_not_of(" \t\r");
        if (b == std::string::npos || line[b] == '#') continue;
        line = line.substr(b, line.find_last_not_of(" \t\r") + 1 - b);
        if (!decode_key(line))
            throw sb::Error(SB_ERR_INVALID, where + ": line " + std::to_string(n) +
                                                " is not a Z85 CURVE public key (40 characters)");
        keys.push_back(line);
    }
    if (keys.empty()) throw sb::Error(SB_ERR_INVALID, where + " holds no key");
    return keys;
}

std::string encode_key(const std::uint8_t* key) {
    char buf[41] = {};
    zmq_z85_encode(buf, key, 32);
    return buf;
}

// The message type as the client sent it, if it is safe to echo (a short run
// of upper-case letters); "" otherwise.
std::string printable_type(std::string_view t) {
    if (t.empty() || t.size() > 16) return "";
    for (char c : t)
        if (!((c >= 'A' && c <= 'Z') || c == '_')) return "";
    return std::string(t);
}

// A zmq socket closed with the instance.
struct Socket {
    void* s = nullptr;
    Socket() = default;
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    ~Socket() { close(); }
    void close() {
        if (s) zmq_close(s);
        s = nullptr;
    }
};

// Receives one whole multipart message without waiting; false if none.
bool receive(void* socket, std::vector<std::string>& frames, std::string* user_id = nullptr) {
    frames.clear();
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int flags = frames.empty() ? ZMQ_DONTWAIT : 0;
        if (zmq_msg_recv(&m, socket, flags) < 0) {
            zmq_msg_close(&m);
            return false;
        }
        frames.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
        if (user_id && frames.size() == 2) {
            const char* u = zmq_msg_gets(&m, "User-Id");
            *user_id = u ? u : "";
        }
        bool more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (!more) return true;
    }
}

// Sends frames as one message without waiting. 0, or the errno: EAGAIN (the
// peer's queue is full: try later), EHOSTUNREACH (the peer is gone).
int send(void* socket, std::initializer_list<std::string_view> frames) {
    std::size_t i = 0;
    for (std::string_view f : frames) {
        int flags = ZMQ_DONTWAIT | (++i < frames.size() ? ZMQ_SNDMORE : 0);
        if (zmq_send(socket, f.data(), f.size(), flags) < 0) {
            int err = zmq_errno();
            // After the first frame is accepted the rest always is.
            return err ? err : EIO;
        }
    }
    return 0;
}

// Integer member of a JSON object, or nullopt if absent or not an integer.
std::optional<std::int64_t> int_member(const Poco::JSON::Object::Ptr& o, const char* key) {
    if (!o->has(key)) return std::nullopt;
    Poco::Dynamic::Var v = o->get(key);
    if (!v.isInteger() || v.isBoolean()) return std::nullopt;
    try {
        return v.convert<Poco::Int64>();
    } catch (const Poco::Exception&) {
        return std::nullopt;
    }
}

std::optional<std::string> string_member(const Poco::JSON::Object::Ptr& o, const char* key) {
    if (!o->has(key)) return std::nullopt;
    Poco::Dynamic::Var v = o->get(key);
    if (!v.isString()) return std::nullopt;
    return v.extract<std::string>();
}

// Client-given text for a log line or a dead letter: control characters
// replaced, at most kMaxReason bytes.
std::string printable_text(std::string_view t) {
    std::string out(t.substr(0, kMaxReason));
    for (char& c : out)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    return out;
}

// A client-given id for a log line: at most 64 printable characters.
std::string printable_id(std::string_view t) {
    std::string out = printable_text(t.substr(0, 64));
    return t.size() > 64 ? out + "..." : out;
}

class ZmqFeed : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "zmq-feed";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "Department feed over ZeroMQ (CURVE + ZAP): records under a credit window, "
                        "acknowledged by the client; erase notices with receipts";
        i.kind = SB_KIND_DESTINATION;
        i.capabilities = SB_CAP_ASYNC_ACK | SB_CAP_JSON_RECORDS; // record_json and meta only
        i.config = {
            sb::Field::string("endpoint").required().describe(
                "Where the ROUTER socket binds, e.g. tcp://0.0.0.0:5601 (tcp://127.0.0.1:* for any free port)"),
            sb::Field::string("server_secret_key").secret().describe(
                "The server's CURVE secret key, Z85 (switchboard keygen); required unless insecure = true"),
            sb::Field::string("clients").multi().describe(
                "The department's CURVE public keys (Z85, 40 characters); only these are admitted"),
            sb::Field::path("client_key_files").multi().describe(
                "Files holding more of the department's public keys, one a line (NAME.pub as switchboard "
                "keygen writes it); relative to the config file"),
            sb::Field::boolean("insecure").fallback("false").describe(
                "Allow a plaintext feed without CURVE (tests on loopback only)"),
            sb::Field::integer("credit_max").range(1, static_cast<double>(kMaxCredit)).fallback("1000").describe(
                "Most records in flight to the client, whatever credit it asks for"),
            sb::Field::duration("ack_timeout").range(100, 86'400'000).fallback("\"30s\"").describe(
                "Resend what is in flight (and unanswered erase notices) when no ACK came for this long"),
            sb::Field::duration("receipt_deadline").min(1000).fallback("\"7d\"").describe(
                "An erase notice unanswered for this long is reported as a missing receipt"),
            sb::Field::duration("heartbeat").range(100, 600'000).fallback("\"5s\"").describe(
                "ZeroMQ heartbeat interval; a peer silent for three intervals is disconnected"),
        };
        return i;
    }

    explicit ZmqFeed(sb::Host host)
        : sb::Plugin(host),
          endpoint_(host.string("endpoint")),
          insecure_(host.boolean("insecure")),
          credit_max_(host.integer("credit_max")),
          ack_timeout_ms_(host.duration_ms("ack_timeout")),
          receipt_deadline_ms_(host.duration_ms("receipt_deadline")),
          heartbeat_ms_(host.duration_ms("heartbeat")),
          name_(host.instance_name()) {
        auto secret = host.string_opt("server_secret_key");
        auto clients = host.list("clients");
        auto key_files = host.list("client_key_files");
        for (std::size_t k = 0; k < key_files.size(); ++k)
            for (auto& key : read_key_file(key_files[k], k)) clients.push_back(std::move(key));
        if (!insecure_) {
            if (!secret || secret->empty())
                throw sb::Error(SB_ERR_INVALID, "config key 'server_secret_key' is not set: a plaintext "
                                                "feed is refused unless insecure = true");
            if (!zmq_has("curve"))
                throw sb::Error(SB_ERR_INVALID, "this libzmq was built without CURVE security; "
                                                "refusing to start a feed (insecure = true would allow plaintext)");
            if (!decode_key(*secret))
                throw sb::Error(SB_ERR_INVALID, "config key 'server_secret_key': not a Z85 CURVE key "
                                                "(40 characters, as switchboard keygen writes)");
            char pub[41] = {};
            if (zmq_curve_public(pub, secret->c_str()) != 0)
                throw sb::Error(SB_ERR_INVALID, "config key 'server_secret_key': " + zmq_error());
            secret_ = *secret;
            public_ = pub;
            if (clients.empty())
                throw sb::Error(SB_ERR_INVALID, "neither 'clients' nor 'client_key_files' lists a key: no "
                                                "department could connect");
        }
        for (std::size_t k = 0; k < clients.size(); ++k) {
            if (!decode_key(clients[k]))
                throw sb::Error(SB_ERR_INVALID, "config key 'clients'[" + std::to_string(k) +
                                                    "]: not a Z85 CURVE public key (40 characters)");
            clients_.insert(clients[k]);
        }
        if (endpoint_.find("://") == std::string::npos)
            throw sb::Error(SB_ERR_INVALID, "config key 'endpoint': '" + endpoint_ +
                                                "' is not a ZeroMQ endpoint such as tcp://0.0.0.0:5601");
    }

    ~ZmqFeed() override { shutdown(); }

    void start() {
        // The feed id names this numbering of the department's sequence
        // numbers. It lives in the instance's state, in the journal with the
        // outbox: a journal started afresh (numbers from 1 again) gets a new
        // one, and a client that persisted the old one knows its position
        // is not in this numbering.
        if (auto id = host().state(kFeedIdKey); id && !id->empty()) {
            feed_id_ = *id;
        } else {
            std::random_device rd;
            char buf[17];
            std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
            feed_id_ = buf;
            if (host().set_state(kFeedIdKey, feed_id_) != SB_OK)
                throw sb::Error(SB_ERR_INTERNAL, "cannot store the feed id in the instance state");
        }
        ctx_ = zmq_ctx_new();
        if (!ctx_) throw sb::Error(SB_ERR_INTERNAL, "cannot create a ZeroMQ context: " + zmq_error());
        // The ZAP handler first: libzmq admits every CURVE client when no
        // handler is bound, so a feed without one must never listen.
        zap_.s = zmq_socket(ctx_, ZMQ_REP);
        int zero = 0;
        if (!zap_.s || zmq_setsockopt(zap_.s, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
            zmq_bind(zap_.s, kZapEndpoint) != 0) {
            std::string why = zmq_error();
            shutdown();
            throw sb::Error(SB_ERR_INTERNAL, "no ZAP handler (" + why + "); refusing to start the feed");
        }
        router_.s = zmq_socket(ctx_, ZMQ_ROUTER);
        std::string why;
        if (!router_.s || !configure_router(why) || zmq_bind(router_.s, endpoint_.c_str()) != 0) {
            if (why.empty()) why = zmq_error();
            shutdown();
            throw sb::Error(SB_ERR_INVALID, "config key 'endpoint': cannot bind " + endpoint_ + ": " + why);
        }
        char last[256] = {};
        std::size_t len = sizeof last;
        zmq_getsockopt(router_.s, ZMQ_LAST_ENDPOINT, last, &len);
        bound_ = last;
        wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        wake_pending_ = false;
        if (wake_fd_ < 0) {
            shutdown();
            throw sb::Error(SB_ERR_INTERNAL, std::string("eventfd: ") + std::strerror(errno));
        }
        stopping_ = false;
        thread_ = std::thread([this] { io_loop(); });
        if (insecure_)
            host().warn("listening on " + bound_ + " in PLAINTEXT (insecure = true): for tests on loopback "
                        "only");
        else
            host().info("listening on " + bound_ + " (CURVE, server public key " + public_ + ", " +
                        std::to_string(clients_.size()) + " client key(s) admitted)");
    }

    void stop() { shutdown(); }

    sb::Status deliver(const sb::Delivery& d) {
        // Written in place (one allocation): a message per record.
        using sb::detail::append_json_int;
        using sb::detail::append_json_string;
        std::string body;
        std::string_view record = d.record.json();
        body.reserve(record.size() + 256);
        body += "{\"seq\":";
        append_json_int(body, static_cast<std::int64_t>(d.sequence));
        body += ",\"id\":";
        append_json_string(body, d.record_id);
        body += ",\"purpose\":";
        append_json_string(body, d.purpose);
        body += ",\"profile\":";
        append_json_string(body, d.profile);
        body += ",\"profile_version\":";
        append_json_int(body, static_cast<std::int64_t>(d.profile_version));
        body += ",\"expires_at\":";
        if (auto expires = d.record.meta("expires_at")) append_json_string(body, *expires);
        else body += "null";
        body += ",\"record\":";
        body += record.empty() ? std::string_view("null") : record;
        body += "}";
        {
            std::lock_guard lock(mutex_);
            if (d.sequence <= acked_) return SB_OK; // the client holds it already (said so in HELLO)
            highest_seen_ = std::max(highest_seen_, d.sequence);
            Out o{d.sequence, d.id, std::string(d.record_id), std::move(body), false};
            if (out_.empty() || out_.back().seq < d.sequence) {
                out_.push_back(std::move(o));
            } else {
                auto it = out_from(d.sequence);
                if (it != out_.end() && it->seq == d.sequence) {
                    it->delivery_id = d.id; // the host asks again: the same record, a new id
                } else {
                    std::size_t at = static_cast<std::size_t>(it - out_.begin());
                    out_.insert(it, std::move(o));
                    first_unsent_ = std::min(first_unsent_, at);
                }
            }
        }
        wake();
        return SB_PENDING;
    }

    sb::Status erase(const sb::EraseRequest& req) {
        std::string id(req.record_id);
        if (id.empty()) throw sb::Error(SB_ERR_INVALID, "erase request without a record id");
        std::optional<std::string> receipt;
        {
            std::lock_guard lock(mutex_);
            if (auto it = confirmed_.find(id); it != confirmed_.end()) receipt = it->second;
        }
        if (!receipt) receipt = host().state((kErasedPrefix + id).c_str());
        if (receipt) {
            // Already confirmed by the department: answer with its receipt at once.
            host().count("erase_repeats_answered");
            host().complete(req.id, SB_OK, receipt->c_str());
            return SB_PENDING;
        }
        {
            std::lock_guard lock(mutex_);
            auto [it, fresh] = notices_.try_emplace(id);
            Notice& n = it->second;
            n.request_id = req.id; // a retried request takes over the notice
            if (fresh) {
                n.notice = "E-" + id;
                n.reason = req.reason == SB_ERASE_REQUEST ? "request" : "retention";
                n.created_ms = host().now_ms();
                for (const Out& o : out_)
                    if (o.record_id == id) n.seq = o.seq;
            }
            n.sent_at = 0; // (re)send at the next pass
        }
        host().count("erase_notices");
        wake();
        return SB_PENDING;
    }

private:
    struct Out {
        std::uint64_t seq;
        std::uint64_t delivery_id;
        std::string record_id;
        std::string body; // the RECORD message body
        bool sent;
    };
    struct Notice {
        std::string notice;
        std::uint64_t request_id = 0;
        const char* reason = "retention";
        std::uint64_t seq = 0;         // 0 when no longer known
        std::int64_t created_ms = 0;   // host clock
        std::int64_t sent_at = 0;      // steady clock; 0 = not sent since the last HELLO
        bool overdue = false;
    };
    struct Done {
        std::uint64_t id;
        std::string receipt;   // erase receipts; the reason of a rejected record
        std::string record_id; // erase: remember the receipt under this id
        sb_status status = SB_OK;
    };

    bool configure_router(std::string& why) {
        auto set = [&](int opt, const void* v, std::size_t n, const char* what) {
            if (zmq_setsockopt(router_.s, opt, v, n) == 0) return true;
            why = std::string(what) + ": " + zmq_error();
            return false;
        };
        int one = 1, zero = 0;
        int hwm = 100000; // bounded anyway by the credit and the notices outstanding
        std::int64_t max_message = kMaxMessage;
        int ivl = static_cast<int>(heartbeat_ms_), timeout = static_cast<int>(heartbeat_ms_ * 3);
        if (!set(ZMQ_ROUTER_MANDATORY, &one, sizeof one, "ZMQ_ROUTER_MANDATORY") ||
            !set(ZMQ_LINGER, &zero, sizeof zero, "ZMQ_LINGER") ||
            !set(ZMQ_SNDHWM, &hwm, sizeof hwm, "ZMQ_SNDHWM") ||
            !set(ZMQ_MAXMSGSIZE, &max_message, sizeof max_message, "ZMQ_MAXMSGSIZE") ||
            !set(ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl, "ZMQ_HEARTBEAT_IVL") ||
            !set(ZMQ_HEARTBEAT_TIMEOUT, &timeout, sizeof timeout, "ZMQ_HEARTBEAT_TIMEOUT") ||
            !set(ZMQ_HEARTBEAT_TTL, &timeout, sizeof timeout, "ZMQ_HEARTBEAT_TTL") ||
            !set(ZMQ_ZAP_DOMAIN, kZapDomain, std::strlen(kZapDomain), "ZMQ_ZAP_DOMAIN"))
            return false;
        if (insecure_) return true;
        return set(ZMQ_CURVE_SERVER, &one, sizeof one, "ZMQ_CURVE_SERVER") &&
               set(ZMQ_CURVE_SECRETKEY, secret_.data(), secret_.size(), "ZMQ_CURVE_SECRETKEY");
    }

    void shutdown() {
        if (thread_.joinable()) {
            stopping_ = true;
            wake();
            thread_.join();
        }
        router_.close();
        zap_.close();
        if (ctx_) zmq_ctx_term(ctx_);
        ctx_ = nullptr;
        if (wake_fd_ >= 0) ::close(wake_fd_);
        wake_fd_ = -1;
    }

    // One write per wake-up of the I/O thread, not per record: a record
    // queued while a wake-up is pending is taken by the same pass (the I/O
    // thread clears the flag before it looks at the queue).
    void wake() {
        if (wake_fd_ < 0 || wake_pending_.exchange(true)) return;
        std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
    }

    // --- the I/O thread ---------------------------------------------------------

    void io_loop() {
        std::int64_t last_gauges = 0;
        std::vector<std::string> frames;
        while (!stopping_) {
            zmq_pollitem_t items[3] = {{router_.s, 0, ZMQ_POLLIN, 0},
                                       {zap_.s, 0, ZMQ_POLLIN, 0},
                                       {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
            if (zmq_poll(items, 3, 100) < 0 && zmq_errno() != EINTR) {
                host().error("poll failed: " + zmq_error());
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
                continue;
            }
            if (items[2].revents & ZMQ_POLLIN) {
                std::uint64_t n;
                [[maybe_unused]] auto r = ::read(wake_fd_, &n, sizeof n);
                wake_pending_.store(false);
            }
            // The ZAP handler before the feed: a handshake waits on it.
            for (int k = 0; k < 64 && receive(zap_.s, frames); ++k) answer_zap(frames);
            std::string user;
            for (int k = 0; k < 4096 && receive(router_.s, frames, &user); ++k) on_message(frames, user);
            pump();
            if (steady_ms() - last_gauges >= 500) {
                last_gauges = steady_ms();
                gauges();
            }
        }
    }

    // ZAP (RFC 27): admit a CURVE client only with a listed key.
    void answer_zap(const std::vector<std::string>& f) {
        // version, request id, domain, address, routing id, mechanism, credentials...
        std::string status = "400", text = "refused", user;
        if (f.size() >= 6 && f[0] == "1.0") {
            const std::string& mechanism = f[5];
            if (mechanism == "CURVE" && f.size() >= 7 && f[6].size() == 32 && !insecure_) {
                std::string key = encode_key(reinterpret_cast<const std::uint8_t*>(f[6].data()));
                if (clients_.count(key)) {
                    status = "200";
                    text = "OK";
                    user = key;
                } else {
                    text = "client key not listed for this feed";
                    refused(key, f[3]);
                }
            } else if (mechanism == "NULL" && insecure_) {
                status = "200";
                text = "OK";
            } else {
                text = "mechanism not accepted";
                refused("(" + printable_type(mechanism) + " mechanism)", f[3]);
            }
        }
        std::string id = f.size() >= 2 ? f[1] : "";
        zmq_send(zap_.s, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(zap_.s, id.data(), id.size(), ZMQ_SNDMORE);
        zmq_send(zap_.s, status.data(), status.size(), ZMQ_SNDMORE);
        zmq_send(zap_.s, text.data(), text.size(), ZMQ_SNDMORE);
        zmq_send(zap_.s, user.data(), user.size(), ZMQ_SNDMORE);
        zmq_send(zap_.s, "", 0, 0);
    }

    // A refused handshake: counted, and logged and audited (event
    // handshake_refused) with the key that tried (a public key is not
    // personal data) and the peer's address, at most once a minute per key:
    // an entry's `refusals` counts the refusals since that key's last entry.
    void refused(const std::string& key, const std::string& address) {
        host().count("handshakes_refused");
        std::int64_t now = steady_ms();
        if (refusals_.size() > 1000) refusals_.clear();
        auto& r = refusals_[key];
        ++r.count;
        if (r.logged_at && now - r.logged_at < 60'000) return;
        const std::string from = address.empty() ? "?" : address;
        host().warn("handshake refused: client key " + key + " from " + from +
                    " is not listed for this feed (" + std::to_string(r.count) + " refusal(s) since last report)");
        host().audit("handshake_refused",
                     "key=" + key + " address=" + from + " refusals=" + std::to_string(r.count));
        r.logged_at = now;
        r.count = 0;
    }

    // ERROR: `type` is the message it answers ("" when the type itself is
    // not understood); `fatal` says the connection has no session (any more)
    // and the client must start one with HELLO (on a new connection).
    void error_to(const std::string& peer, std::string_view type, const std::string& message,
                  bool fatal = false) {
        host().count("client_errors");
        if (host().log_enabled(SB_LOG_DEBUG)) host().debug("answered ERROR: " + message);
        std::string body = "{\"error\":" + sb::json_quote(message) + ",\"type\":" +
                           (type.empty() ? std::string("null") : sb::json_quote(type)) +
                           ",\"fatal\":" + (fatal ? "true" : "false") + "}";
        send(router_.s, {peer, "ERROR", body});
    }

    void on_message(const std::vector<std::string>& f, const std::string& user) {
        if (f.empty()) return;
        const std::string& peer = f[0];
        if (f.size() != 3) {
            error_to(peer, f.size() >= 2 ? printable_type(f[1]) : "",
                     "a message is two frames, a type and a JSON object; got " + std::to_string(f.size() - 1));
            return;
        }
        const std::string& type = f[1];
        if (type != "HELLO" && type != "ACK" && type != "ERASED" && type != "REJECT" && type != "BYE") {
            std::string t = printable_type(type);
            error_to(peer, "", t.empty() ? "unknown message type" : "unknown message type '" + t + "'");
            return;
        }
        Poco::JSON::Object::Ptr body;
        try {
            Poco::JSON::Parser parser;
            Poco::Dynamic::Var v = parser.parse(f[2]);
            if (v.type() == typeid(Poco::JSON::Object::Ptr)) body = v.extract<Poco::JSON::Object::Ptr>();
        } catch (const std::exception&) {
        }
        if (!body) {
            error_to(peer, type, type + ": the body is not a JSON object");
            return;
        }
        if (type == "HELLO") {
            on_hello(peer, body, user);
            return;
        }
        // Everything else belongs to a session, which only HELLO starts on
        // this connection. A DEALER reconnects silently after a network
        // break with a new routing id: its messages then come here, and the
        // client learns that it must say HELLO again.
        bool in_session;
        {
            std::lock_guard lock(mutex_);
            in_session = has_peer_ && peer_ == peer;
        }
        if (!in_session) {
            if (type != "BYE")
                error_to(peer, type, type + ": no session on this connection; say HELLO first", true);
            return;
        }
        if (type == "ACK") on_ack(peer, body);
        else if (type == "ERASED") on_erased(peer, body);
        else if (type == "REJECT") on_reject(peer, body);
        else on_bye(peer);
    }

    void on_hello(const std::string& peer, const Poco::JSON::Object::Ptr& b, const std::string& user) {
        auto protocol = int_member(b, "protocol");
        auto acked = int_member(b, "acked");
        auto credit = int_member(b, "credit");
        if (!protocol || *protocol < kProtocolMin || *protocol > kProtocolMax) {
            error_to(peer, "HELLO", "HELLO: protocol version " + (protocol ? std::to_string(*protocol) : "missing") +
                               " is not spoken here; this server speaks 1 and 2",
                     true);
            return;
        }
        if (!acked || *acked < 0) {
            error_to(peer, "HELLO", "HELLO: 'acked' must be an integer >= 0", true);
            return;
        }
        if (!credit || *credit < 1 || *credit > kMaxCredit) {
            error_to(peer, "HELLO", "HELLO: 'credit' must be an integer from 1 to 10000", true);
            return;
        }
        // A client that names another numbering (a feed id it persisted from
        // an earlier WELCOME) holds a position that means nothing here: its
        // `acked` acknowledges nothing, and it learns the new id in WELCOME.
        std::optional<std::string> feed;
        if (b->has("feed")) {
            feed = string_member(b, "feed");
            if (!feed) {
                error_to(peer, "HELLO", "HELLO: 'feed' must be a string (the feed id from WELCOME)", true);
                return;
            }
        }
        const bool other_feed = feed && !feed->empty() && *feed != feed_id_;
        if (other_feed)
            host().warn("client " + (user.empty() ? std::string("(plaintext)") : user) + " holds position " +
                        std::to_string(*acked) + " of feed " + printable_id(*feed) + ", not of this feed (" +
                        feed_id_ + "): its position is not taken as acknowledgement; it starts again from the "
                        "lowest record held");
        std::uint64_t next;
        std::size_t resend;
        {
            std::lock_guard lock(mutex_);
            peer_ = peer;
            has_peer_ = true;
            credit_ = static_cast<std::uint64_t>(std::min<std::int64_t>(*credit, credit_max_));
            protocol_ = static_cast<int>(*protocol);
            if (!other_feed) ack_upto(static_cast<std::uint64_t>(*acked));
            resend = inflight_;
            unsend_all();
            next = out_.empty() ? std::max(acked_, highest_seen_) + 1 : out_.front().seq;
        }
        send(router_.s, {peer, "WELCOME",
                         "{\"protocol\":" + std::to_string(*protocol) + ",\"destination\":" + sb::json_quote(name_) +
                             ",\"feed\":" + sb::json_quote(feed_id_) + ",\"next\":" + std::to_string(next) + "}"});
        host().count("sessions");
        host().info("client " + (user.empty() ? std::string("(plaintext)") : user) + " started a session: acked " +
                    std::to_string(*acked) + ", credit " + std::to_string(*credit) + ", next " +
                    std::to_string(next) + (resend ? ", " + std::to_string(resend) + " record(s) to resend" : ""));
    }

    void on_ack(const std::string& peer, const Poco::JSON::Object::Ptr& b) {
        auto upto = int_member(b, "upto");
        if (!upto || *upto < 0) {
            error_to(peer, "ACK", "ACK: 'upto' must be an integer >= 0");
            return;
        }
        std::uint64_t s = static_cast<std::uint64_t>(*upto);
        std::uint64_t sent;
        {
            std::lock_guard lock(mutex_);
            sent = highest_sent_;
            // Nothing beyond what was sent can have been processed.
            ack_upto(std::min(s, highest_sent_));
            last_progress_ = steady_ms();
        }
        if (s > sent)
            error_to(peer, "ACK", "ACK: upto " + std::to_string(s) + " is beyond the last record sent (" +
                               std::to_string(sent) + "); taken as " + std::to_string(sent));
    }

    void on_erased(const std::string& peer, const Poco::JSON::Object::Ptr& b) {
        auto notice = string_member(b, "notice");
        auto record = string_member(b, "record_id");
        auto receipt = string_member(b, "receipt");
        if (!notice || !record || !receipt) {
            error_to(peer, "ERASED", "ERASED: 'notice', 'record_id' and 'receipt' must be strings");
            return;
        }
        if (receipt->empty() || receipt->size() > kMaxReceipt) {
            error_to(peer, "ERASED", "ERASED: 'receipt' must be 1 to " + std::to_string(kMaxReceipt) + " bytes");
            return;
        }
        std::string problem;
        {
            std::lock_guard lock(mutex_);
            auto it = notices_.find(*record);
            if (it == notices_.end()) {
                // An answer repeated after the notice was settled is fine.
                if (!confirmed_.count(*record)) problem = "ERASED: no erase notice is outstanding for that record";
            } else if (it->second.notice != *notice) {
                problem = "ERASED: 'notice' does not match the notice sent for that record";
            } else {
                done_.push_back({it->second.request_id, *receipt, *record});
                confirmed_[*record] = *receipt;
                notices_.erase(it);
            }
        }
        if (!problem.empty()) error_to(peer, "ERASED", problem);
    }

    void on_bye(const std::string& peer) {
        std::lock_guard lock(mutex_);
        if (has_peer_ && peer_ == peer) {
            has_peer_ = false;
            unsend_all();
        }
    }

    // REJECT: the client cannot take this record, ever (it cannot read it,
    // or its own system refuses it). The delivery is completed as a
    // permanent failure: the host dead-letters it, and an operator can
    // retry it after a fix. Only a record sent and not yet acknowledged.
    void on_reject(const std::string& peer, const Poco::JSON::Object::Ptr& b) {
        auto seq = int_member(b, "seq");
        auto reason = string_member(b, "reason");
        if (!seq || *seq < 1 || !reason) {
            error_to(peer, "REJECT", "REJECT: 'seq' must be an integer >= 1 and 'reason' a string");
            return;
        }
        if (reason->empty() || reason->size() > kMaxReason) {
            error_to(peer, "REJECT", "REJECT: 'reason' must be 1 to " + std::to_string(kMaxReason) + " bytes");
            return;
        }
        const std::uint64_t s = static_cast<std::uint64_t>(*seq);
        std::string record_id;
        {
            std::lock_guard lock(mutex_);
            auto it = out_from(s);
            if (it != out_.end() && it->seq == s && it->sent) {
                record_id = it->record_id;
                std::size_t at = static_cast<std::size_t>(it - out_.begin());
                --inflight_;
                if (at < first_unsent_) --first_unsent_;
                done_.push_back({it->delivery_id, "rejected by the department: " + printable_text(*reason), {},
                                 SB_ERR_PERMANENT});
                out_.erase(it);
                last_progress_ = steady_ms();
            }
        }
        if (record_id.empty()) {
            error_to(peer, "REJECT", "REJECT: seq " + std::to_string(s) + " is not a record in flight");
            return;
        }
        host().count("records_rejected");
        host().warn("the department rejected record " + record_id + " (seq " + std::to_string(s) +
                    "): " + printable_text(*reason));
    }

    // Everything up to `s` is acknowledged (mutex_ held).
    void ack_upto(std::uint64_t s) {
        std::uint64_t n = 0;
        while (!out_.empty() && out_.front().seq <= s) {
            if (out_.front().sent) --inflight_;
            done_.push_back({out_.front().delivery_id, {}, {}});
            out_.pop_front();
            if (first_unsent_) --first_unsent_;
            ++n;
        }
        acked_ = std::max(acked_, s);
    }

    // What is in flight goes again (mutex_ held).
    void unsend_all() {
        for (Out& o : out_) o.sent = false;
        inflight_ = 0;
        first_unsent_ = 0;
        for (auto& [id, n] : notices_) n.sent_at = 0;
    }

    void drop_peer() {
        has_peer_ = false;
        unsend_all();
        host().info("client gone; what it had in flight will be sent again after its next HELLO");
    }

    // The first record in out_ with a sequence number >= seq (out_ is in
    // sequence order). Under mutex_.
    std::deque<Out>::iterator out_from(std::uint64_t seq) {
        return std::lower_bound(out_.begin(), out_.end(), seq,
                                [](const Out& a, std::uint64_t s) { return a.seq < s; });
    }

    // Whether the record with sequence `seq` is still to be acknowledged.
    // Under mutex_.
    bool waiting_for_ack(std::uint64_t seq) {
        auto it = out_from(seq);
        return it != out_.end() && it->seq == seq;
    }

    // Sends what the credit allows, resends on ack_timeout, (re)sends erase
    // notices, then reports completions with the lock dropped.
    void pump() {
        std::vector<Done> done;
        std::uint64_t sent = 0, resent = 0, notices = 0;
        std::vector<std::string> overdue;
        {
            std::lock_guard lock(mutex_);
            std::int64_t now = steady_ms();
            if (has_peer_ && inflight_ > 0 && now - last_progress_ >= ack_timeout_ms_) {
                resent = inflight_;
                unsend_all();
                last_progress_ = now;
            }
            std::vector<std::size_t> batch; // out_ indexes of the next message's records
            std::string message;
            while (has_peer_ && inflight_ < credit_ && first_unsent_ < out_.size()) {
                if (out_[first_unsent_].sent) {
                    ++first_unsent_;
                    continue;
                }
                // Version 1: a RECORD each. Version 2: as many unsent records
                // as the credit and the batch's bounds allow in one RECORDS.
                batch.clear();
                std::size_t bytes = 0;
                for (std::size_t i = first_unsent_; i < out_.size() && inflight_ + batch.size() < credit_; ++i) {
                    const Out& o = out_[i];
                    if (o.sent) continue;
                    if (!batch.empty() && (protocol_ < 2 || batch.size() >= kBatchRecords ||
                                           bytes + o.body.size() > kBatchBytes))
                        break;
                    batch.push_back(i);
                    bytes += o.body.size() + 1;
                }
                int err;
                if (protocol_ < 2) {
                    err = send(router_.s, {peer_, "RECORD", out_[batch[0]].body});
                } else {
                    message.clear();
                    message.reserve(bytes + 16);
                    message += "{\"records\":[";
                    for (std::size_t k = 0; k < batch.size(); ++k) {
                        if (k) message.push_back(',');
                        message += out_[batch[k]].body;
                    }
                    message += "]}";
                    err = send(router_.s, {peer_, "RECORDS", message});
                }
                if (err == EAGAIN) break;
                if (err) {
                    drop_peer();
                    break;
                }
                if (inflight_ == 0) last_progress_ = now;
                for (std::size_t i : batch) {
                    Out& o = out_[i];
                    o.sent = true;
                    ++inflight_;
                    highest_sent_ = std::max(highest_sent_, o.seq);
                    ++sent;
                }
                ++first_unsent_;
            }
            std::int64_t host_now = host().now_ms();
            for (auto& [id, n] : notices_) {
                // An erasure on request can come while its record is still
                // here, unacknowledged: the notice follows the record, so
                // that the client has something to delete when it comes.
                bool follows = n.seq && waiting_for_ack(n.seq);
                if (has_peer_ && !follows && (n.sent_at == 0 || now - n.sent_at >= ack_timeout_ms_)) {
                    std::string body = "{\"notice\":" + sb::json_quote(n.notice) + ",\"record_id\":" +
                                       sb::json_quote(id) + ",\"seq\":" + std::to_string(n.seq) +
                                       ",\"reason\":\"" + n.reason + "\"}";
                    int err = send(router_.s, {peer_, "ERASE", body});
                    if (err == EAGAIN) break;
                    if (err) {
                        drop_peer();
                        break;
                    }
                    n.sent_at = now;
                    ++notices;
                }
                if (!n.overdue && host_now - n.created_ms >= receipt_deadline_ms_) {
                    n.overdue = true;
                    overdue.push_back(id);
                }
            }
            done.swap(done_);
        }
        if (sent) host().count("records_sent", sent);
        if (resent) {
            host().count("records_resent", resent);
            host().info("no ACK for " + std::to_string(ack_timeout_ms_) + "ms; sending " +
                        std::to_string(resent) + " record(s) in flight again");
        }
        if (notices) host().count("erase_notices_sent", notices);
        for (const auto& id : overdue)
            host().warn("erase notice for record " + id + " has no receipt after receipt_deadline (" +
                        std::to_string(receipt_deadline_ms_ / 1000) + "s)");
        std::uint64_t acked = 0;
        for (const Done& d : done) {
            if (d.status != SB_OK) {
                host().complete(d.id, d.status, d.receipt.c_str());
                continue;
            }
            if (d.record_id.empty()) {
                ++acked;
                host().complete(d.id, SB_OK);
                continue;
            }
            // Kept so that a retried erase request is answered at once, also
            // after a restart. A public receipt, not the record.
            host().set_state((kErasedPrefix + d.record_id).c_str(), d.receipt);
            host().count("erase_receipts");
            host().info("erase of record " + d.record_id + " confirmed by the department");
            host().complete(d.id, SB_OK, d.receipt.c_str());
        }
        if (acked) host().count("records_acked", acked);
    }

    void gauges() {
        std::size_t held, inflight, pending, overdue = 0;
        bool connected;
        {
            std::lock_guard lock(mutex_);
            held = out_.size();
            inflight = inflight_;
            pending = notices_.size();
            for (const auto& [id, n] : notices_) overdue += n.overdue;
            connected = has_peer_;
        }
        host().gauge("records_held", static_cast<double>(held));
        host().gauge("records_in_flight", static_cast<double>(inflight));
        host().gauge("erase_notices_pending", static_cast<double>(pending));
        host().gauge("erase_receipts_overdue", static_cast<double>(overdue));
        host().gauge("connected", connected ? 1 : 0);
    }

    // Configuration.
    const std::string endpoint_;
    const bool insecure_;
    const std::int64_t credit_max_;
    const std::int64_t ack_timeout_ms_;
    const std::int64_t receipt_deadline_ms_;
    const std::int64_t heartbeat_ms_;
    const std::string name_;
    std::string secret_, public_;
    std::string feed_id_; // set in start; this numbering of the department's sequence numbers
    std::set<std::string> clients_;

    // Sockets: made in start, used by the I/O thread only, closed in stop.
    void* ctx_ = nullptr;
    Socket router_, zap_;
    std::string bound_;
    int wake_fd_ = -1;
    std::atomic<bool> wake_pending_{false};
    std::atomic<bool> stopping_{false};
    std::thread thread_;

    struct Refusal {
        std::int64_t logged_at = 0;
        std::uint64_t count = 0;
    };
    std::map<std::string, Refusal> refusals_; // I/O thread

    // Shared by the hooks and the I/O thread.
    std::mutex mutex_;
    std::deque<Out> out_;            // seq order; everything not yet acknowledged
    std::size_t first_unsent_ = 0;   // out_[i] for i < first_unsent_ are sent
    std::uint64_t inflight_ = 0;     // sent and not acknowledged
    std::uint64_t acked_ = 0;        // highest seq the client acknowledged
    std::uint64_t highest_sent_ = 0;
    std::uint64_t highest_seen_ = 0;
    std::string peer_;               // routing id of the session's connection
    bool has_peer_ = false;
    std::uint64_t credit_ = 0;
    int protocol_ = 1;               // the session's version (HELLO)
    std::int64_t last_progress_ = 0; // steady ms of the last ACK, or of the first send into an empty window
    std::map<std::string, Notice> notices_;        // by record id
    std::map<std::string, std::string> confirmed_; // record id -> receipt
    std::vector<Done> done_;
};

} // namespace

SB_PLUGIN(ZmqFeed)
