#pragma once

// A feed server for the client's tests, written from docs/feed-protocol.md
// and nothing else: a real ROUTER socket on 127.0.0.1 with CURVE and a ZAP
// handler that admits listed client keys. It keeps an outbox in memory,
// answers HELLO with WELCOME, sends records within the client's credit,
// takes ACKs, sends ERASE notices until they are answered, and records what
// the client did so the tests can check it. Tests can also send raw frames
// (malformed messages) and make it resend from the start (a forgetful
// server) to check that the client drops resends.

#include <zmq.h>

#include <poll.h>
#include <unistd.h>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace feedtest {

struct Keypair {
    std::string pub, sec;
    static Keypair make() {
        char p[41], s[41];
        if (zmq_curve_keypair(p, s) != 0) throw std::runtime_error("zmq_curve_keypair failed");
        return {std::string(p, 40), std::string(s, 40)};
    }
};

struct Hello {
    std::int64_t acked = -1;
    std::int64_t credit = -1;
    std::int64_t protocol = -1;
    std::string feed; // "" when the HELLO named none
};

struct Reject {
    std::int64_t seq = 0;
    std::string reason;
};

struct Erased {
    std::string notice, record_id, receipt;
};

struct ServerOptions {
    bool curve = true;
    std::optional<Keypair> keys;           // generated when not given
    std::set<std::string> allowed;         // client public keys admitted
    std::string bind = "tcp://127.0.0.1:*";
    std::string destination = "housing";
    bool resend_from_start = false;        // ignore HELLO's acked when resending
    std::string feed_id;                   // WELCOME "feed"; none when empty
    int speaks_up_to = 2;                  // protocol versions spoken: 1 to this
    std::size_t records_per_message = 4;   // version 2: RECORDS of at most this many
};

class TestFeedServer {
public:
    explicit TestFeedServer(ServerOptions o) : opt_(std::move(o)) {
        if (!opt_.keys) opt_.keys = Keypair::make();
        ctx_ = zmq_ctx_new();
        if (::pipe(wake_) != 0) throw std::runtime_error("pipe");
        // The ZAP handler must be bound before the ROUTER accepts anyone.
        zap_ = zmq_socket(ctx_, ZMQ_REP);
        if (zmq_bind(zap_, "inproc://zeromq.zap.01") != 0) throw std::runtime_error("zap bind");
        router_ = zmq_socket(ctx_, ZMQ_ROUTER);
        int one = 1, zero = 0;
        zmq_setsockopt(router_, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt(router_, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
        if (opt_.curve) {
            zmq_setsockopt(router_, ZMQ_CURVE_SERVER, &one, sizeof one);
            zmq_setsockopt(router_, ZMQ_CURVE_SECRETKEY, opt_.keys->sec.c_str(), 41);
        }
        zmq_setsockopt(router_, ZMQ_ZAP_DOMAIN, "feed", 4);
        if (zmq_bind(router_, opt_.bind.c_str()) != 0)
            throw std::runtime_error(std::string("bind ") + opt_.bind + ": " + zmq_strerror(zmq_errno()));
        char ep[256];
        size_t n = sizeof ep;
        zmq_getsockopt(router_, ZMQ_LAST_ENDPOINT, ep, &n);
        endpoint_ = ep;
        thread_ = std::thread([this] { loop(); });
    }

    ~TestFeedServer() {
        stop_ = true;
        char c = 1;
        [[maybe_unused]] auto w = ::write(wake_[1], &c, 1);
        thread_.join();
        zmq_close(router_);
        zmq_close(zap_);
        zmq_ctx_term(ctx_);
        ::close(wake_[0]);
        ::close(wake_[1]);
    }

    const std::string& endpoint() const { return endpoint_; }
    const std::string& public_key() const { return opt_.keys->pub; }
    const Keypair& keys() const { return *opt_.keys; }

    // Adds a record to the outbox; returns its seq.
    std::int64_t add_record(const std::string& id, const std::string& record_json = R"({"fields":{"ref":"x"}})") {
        std::int64_t seq;
        {
            std::lock_guard lock(m_);
            seq = next_seq_++;
            std::string body = "{\"seq\":" + std::to_string(seq) + ",\"id\":\"" + id +
                               "\",\"purpose\":\"housing_repair\",\"profile\":\"housing\",\"profile_version\":1,"
                               "\"expires_at\":\"2099-01-01T00:00:00Z\",\"record\":" + record_json + "}";
            outbox_.push_back({seq, id, body});
        }
        poke();
        return seq;
    }

    void add_erase(const std::string& notice, const std::string& record_id, std::int64_t seq,
                   const std::string& reason = "request") {
        {
            std::lock_guard lock(m_);
            std::string body = "{\"notice\":\"" + notice + "\",\"record_id\":\"" + record_id +
                               "\",\"seq\":" + std::to_string(seq) + ",\"reason\":\"" + reason + "\"}";
            erases_[notice] = body;
            erases_to_send_.push_back(notice);
        }
        poke();
    }

    // Sends these frames to the connected client as they are.
    void send_raw(std::vector<std::string> frames) {
        {
            std::lock_guard lock(m_);
            raw_.push_back(std::move(frames));
        }
        poke();
    }

    void set_resend_from_start(bool v) {
        std::lock_guard lock(m_);
        opt_.resend_from_start = v;
    }

    // Observations.
    std::vector<Hello> hellos() const { std::lock_guard lock(m_); return hellos_; }
    std::vector<Reject> rejects() const { std::lock_guard lock(m_); return rejects_; }
    std::int64_t acked() const { std::lock_guard lock(m_); return acked_; }
    std::vector<Erased> erased() const { std::lock_guard lock(m_); return erased_; }
    std::vector<std::string> denied() const { std::lock_guard lock(m_); return denied_; }
    std::size_t records_sent() const { std::lock_guard lock(m_); return records_sent_; }
    // RECORD and RECORDS messages sent.
    std::size_t messages_sent() const { std::lock_guard lock(m_); return messages_sent_; }
    std::int64_t max_in_flight() const { std::lock_guard lock(m_); return max_in_flight_; }
    std::size_t byes() const { std::lock_guard lock(m_); return byes_; }

    // Waits (bounded) until `cond` holds; true if it did.
    bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout) const {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        std::unique_lock lock(m_);
        for (;;) {
            lock.unlock();
            bool ok = cond();
            lock.lock();
            if (ok) return true;
            if (std::chrono::steady_clock::now() >= deadline) return false;
            cv_.wait_for(lock, std::chrono::milliseconds(20));
        }
    }

private:
    struct Rec {
        std::int64_t seq;
        std::string id, body;
    };

    void poke() {
        char c = 1;
        [[maybe_unused]] auto w = ::write(wake_[1], &c, 1);
    }

    bool send(const std::vector<std::string>& frames) {
        if (peer_.empty()) return false;
        if (zmq_send(router_, peer_.data(), peer_.size(), ZMQ_SNDMORE) < 0) return false;
        for (std::size_t i = 0; i < frames.size(); ++i)
            if (zmq_send(router_, frames[i].data(), frames[i].size(), i + 1 < frames.size() ? ZMQ_SNDMORE : 0) < 0)
                return false;
        return true;
    }

    static std::vector<std::string> recv_all(void* s) {
        std::vector<std::string> frames;
        for (;;) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, s, frames.empty() ? ZMQ_DONTWAIT : 0) < 0) {
                zmq_msg_close(&m);
                return frames;
            }
            frames.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
            bool more = zmq_msg_more(&m);
            zmq_msg_close(&m);
            if (!more) return frames;
        }
    }

    void handle_zap() {
        auto f = recv_all(zap_);
        if (f.size() < 6) return;
        std::string status = "400", text = "key not listed";
        std::string key;
        if (f[5] == "CURVE" && f.size() >= 7 && f[6].size() == 32) {
            char z85[41];
            zmq_z85_encode(z85, reinterpret_cast<const std::uint8_t*>(f[6].data()), 32);
            key = z85;
            if (opt_.allowed.count(key)) status = "200", text = "OK";
        } else if (f[5] == "NULL" && !opt_.curve) {
            status = "200", text = "OK";
        }
        if (status != "200") {
            std::lock_guard lock(m_);
            denied_.push_back(key);
            cv_.notify_all();
        }
        std::vector<std::string> reply = {"1.0", f[1], status, text, key, ""};
        for (std::size_t i = 0; i < reply.size(); ++i)
            zmq_send(zap_, reply[i].data(), reply[i].size(), i + 1 < reply.size() ? ZMQ_SNDMORE : 0);
    }

    // Sends records within credit. Called with m_ held.
    // Version 2 sessions get RECORDS of up to records_per_message.
    void pump() {
        if (peer_.empty()) return;
        std::vector<const std::string*> batch;
        std::int64_t batch_upto = 0;
        auto send_batch = [&] {
            if (batch.empty()) return true;
            bool ok;
            if (protocol_ < 2) {
                ok = send({"RECORD", *batch[0]});
            } else {
                std::string body = "{\"records\":[";
                for (std::size_t k = 0; k < batch.size(); ++k) body += (k ? "," : "") + *batch[k];
                ok = send({"RECORDS", body + "]}"});
            }
            if (!ok) return false;
            ++messages_sent_;
            records_sent_ += batch.size();
            sent_upto_ = batch_upto;
            max_in_flight_ = std::max(max_in_flight_, sent_upto_ - acked_);
            batch.clear();
            return true;
        };
        for (const auto& r : outbox_) {
            if (r.seq <= sent_upto_) continue;
            if (r.seq - acked_ > credit_) break;
            batch.push_back(&r.body);
            batch_upto = r.seq;
            if ((protocol_ < 2 || batch.size() >= opt_.records_per_message) && !send_batch()) return;
        }
        send_batch();
    }

    void handle_client() {
        auto f = recv_all(router_);
        if (f.size() != 3) return;
        std::lock_guard lock(m_);
        const std::string& type = f[1];
        Poco::JSON::Object::Ptr body;
        try {
            body = Poco::JSON::Parser().parse(f[2]).extract<Poco::JSON::Object::Ptr>();
        } catch (...) {
            peer_ = f[0];
            send({"ERROR", R"({"error":"bad JSON"})"});
            return;
        }
        if (type == "HELLO") {
            Hello h;
            h.protocol = body->optValue<Poco::Int64>("protocol", -1);
            h.acked = body->optValue<Poco::Int64>("acked", -1);
            h.credit = body->optValue<Poco::Int64>("credit", -1);
            h.feed = body->optValue<std::string>("feed", "");
            hellos_.push_back(h);
            if (h.protocol < 1 || h.protocol > opt_.speaks_up_to) {
                peer_ = f[0];
                send({"ERROR", "{\"error\":\"HELLO: protocol version " + std::to_string(h.protocol) +
                                   " is not spoken here\",\"type\":\"HELLO\",\"fatal\":true}"});
                peer_.clear();
                return;
            }
            protocol_ = h.protocol;
            peer_ = f[0];
            // A position in another numbering acknowledges nothing.
            if (h.feed.empty() || h.feed == opt_.feed_id) acked_ = std::max(acked_, h.acked);
            credit_ = h.credit;
            sent_upto_ = opt_.resend_from_start ? 0 : acked_;
            std::int64_t next = next_seq_;
            for (const auto& r : outbox_)
                if (r.seq > (opt_.resend_from_start ? 0 : acked_)) {
                    next = r.seq;
                    break;
                }
            send({"WELCOME", "{\"protocol\":" + std::to_string(protocol_) + ",\"destination\":\"" + opt_.destination + "\"" +
                                 (opt_.feed_id.empty() ? "" : ",\"feed\":\"" + opt_.feed_id + "\"") +
                                 ",\"next\":" + std::to_string(next) + "}"});
            // Records before erase notices, as the real server does (an
            // erase notice follows its record while that is in flight): a
            // client must not be sent a record after its erase notice.
            pump();
            // A forgetful server resends only once; then it behaves.
            opt_.resend_from_start = false;
            for (const auto& [notice, b] : erases_) send({"ERASE", b});
            erases_to_send_.clear();
        } else if (type == "ACK") {
            acked_ = std::max(acked_, body->optValue<Poco::Int64>("upto", 0));
            if (sent_upto_ < acked_) sent_upto_ = acked_;
        } else if (type == "ERASED") {
            Erased e{body->optValue<std::string>("notice", ""), body->optValue<std::string>("record_id", ""),
                     body->optValue<std::string>("receipt", "")};
            erases_.erase(e.notice);
            erased_.push_back(std::move(e));
        } else if (type == "REJECT") {
            rejects_.push_back({body->optValue<Poco::Int64>("seq", 0), body->optValue<std::string>("reason", "")});
        } else if (type == "BYE") {
            ++byes_;
            peer_.clear();
        }
        cv_.notify_all();
    }

    void loop() {
        while (!stop_) {
            zmq_pollitem_t items[3] = {
                {router_, 0, ZMQ_POLLIN, 0}, {zap_, 0, ZMQ_POLLIN, 0}, {nullptr, wake_[0], ZMQ_POLLIN, 0}};
            zmq_poll(items, 3, 200);
            if (items[2].revents & ZMQ_POLLIN) {
                char buf[64];
                [[maybe_unused]] auto r = ::read(wake_[0], buf, sizeof buf);
            }
            if (items[1].revents & ZMQ_POLLIN) handle_zap();
            int events = 0;
            size_t len = sizeof events;
            while (zmq_getsockopt(router_, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN))
                handle_client();
            std::lock_guard lock(m_);
            for (auto& raw : raw_) send(raw);
            raw_.clear();
            pump();
            for (const auto& n : erases_to_send_)
                if (auto it = erases_.find(n); it != erases_.end()) send({"ERASE", it->second});
            if (!peer_.empty()) erases_to_send_.clear();
            cv_.notify_all();
        }
    }

    ServerOptions opt_;
    void* ctx_ = nullptr;
    void* zap_ = nullptr;
    void* router_ = nullptr;
    int wake_[2] = {-1, -1};
    std::string endpoint_;
    std::thread thread_;
    std::atomic<bool> stop_{false};

    mutable std::mutex m_;
    mutable std::condition_variable cv_;
    std::deque<Rec> outbox_;
    std::int64_t next_seq_ = 1;
    std::string peer_;
    std::int64_t acked_ = 0, sent_upto_ = 0, credit_ = 0, max_in_flight_ = 0, protocol_ = 1;
    std::size_t records_sent_ = 0, messages_sent_ = 0, byes_ = 0;
    std::vector<Hello> hellos_;
    std::vector<Reject> rejects_;
    std::map<std::string, std::string> erases_; // unanswered notices: notice -> body
    std::vector<std::string> erases_to_send_;
    std::vector<Erased> erased_;
    std::vector<std::string> denied_;
    std::vector<std::vector<std::string>> raw_;
};

} // namespace feedtest
