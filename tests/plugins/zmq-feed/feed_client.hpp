#pragma once

// A department client for the zmq-feed tests: a raw DEALER socket speaking
// docs/feed-protocol.md, with bounded waits. Written against the document,
// not against the plugin's code.

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <zmq.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace feedtest {

struct KeyPair {
    std::string pub, secret;
    static KeyPair make() {
        char p[41] = {}, s[41] = {};
        if (zmq_curve_keypair(p, s) != 0) throw std::runtime_error("zmq_curve_keypair failed");
        return {p, s};
    }
};

struct Message {
    std::string type;
    std::string text;
    Poco::JSON::Object::Ptr body; // null if the body is not a JSON object
    std::int64_t integer(const char* key) const { return body->getValue<Poco::Int64>(key); }
    std::string string(const char* key) const { return body->getValue<std::string>(key); }
};

class FeedClient {
public:
    // CURVE when `server_public` is given, plaintext otherwise.
    FeedClient(const std::string& endpoint, const std::string& server_public = {},
               const KeyPair* keys = nullptr) {
        ctx_ = zmq_ctx_new();
        sock_ = zmq_socket(ctx_, ZMQ_DEALER);
        int zero = 0;
        zmq_setsockopt(sock_, ZMQ_LINGER, &zero, sizeof zero);
        if (!server_public.empty()) {
            zmq_setsockopt(sock_, ZMQ_CURVE_SERVERKEY, server_public.data(), 40);
            zmq_setsockopt(sock_, ZMQ_CURVE_PUBLICKEY, keys->pub.data(), 40);
            zmq_setsockopt(sock_, ZMQ_CURVE_SECRETKEY, keys->secret.data(), 40);
        }
        if (zmq_connect(sock_, endpoint.c_str()) != 0)
            throw std::runtime_error("connect " + endpoint + ": " + zmq_strerror(zmq_errno()));
    }
    ~FeedClient() { close(); }
    FeedClient(const FeedClient&) = delete;
    FeedClient& operator=(const FeedClient&) = delete;

    // Goes away without a word, as a crashed client does.
    void close() {
        if (sock_) zmq_close(sock_);
        if (ctx_) zmq_ctx_term(ctx_);
        sock_ = ctx_ = nullptr;
    }

    // Never blocks: a client whose handshake was refused has no connection
    // to queue on, and its messages go nowhere (false).
    bool send_frames(const std::vector<std::string>& frames) {
        for (std::size_t i = 0; i < frames.size(); ++i)
            if (zmq_send(sock_, frames[i].data(), frames[i].size(),
                         ZMQ_DONTWAIT | (i + 1 < frames.size() ? ZMQ_SNDMORE : 0)) < 0)
                return false;
        return true;
    }
    void send(const std::string& type, const std::string& json) { send_frames({type, json}); }
    void hello(std::int64_t acked, std::int64_t credit, int protocol = 1) {
        send("HELLO", "{\"protocol\":" + std::to_string(protocol) + ",\"acked\":" + std::to_string(acked) +
                          ",\"credit\":" + std::to_string(credit) + "}");
    }
    void ack(std::int64_t upto) { send("ACK", "{\"upto\":" + std::to_string(upto) + "}"); }

    // The next message within `timeout`, or nullopt.
    std::optional<Message> receive(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
        zmq_pollitem_t item{sock_, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, static_cast<long>(timeout.count())) <= 0) return std::nullopt;
        std::vector<std::string> frames;
        for (;;) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, sock_, 0) < 0) {
                zmq_msg_close(&m);
                return std::nullopt;
            }
            frames.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
            bool more = zmq_msg_more(&m);
            zmq_msg_close(&m);
            if (!more) break;
        }
        Message out;
        out.type = frames.at(0);
        if (frames.size() > 1) out.text = frames[1];
        try {
            Poco::JSON::Parser p;
            out.body = p.parse(out.text).extract<Poco::JSON::Object::Ptr>();
        } catch (const std::exception&) {
        }
        return out;
    }

    // The next message of `type`, skipping others (which are returned in
    // `skipped` if given).
    std::optional<Message> expect(const std::string& type,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(5),
                                  std::vector<Message>* skipped = nullptr) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            auto m = receive(left);
            if (!m) return std::nullopt;
            if (m->type == type) return m;
            if (skipped) skipped->push_back(*m);
        }
    }

private:
    void* ctx_ = nullptr;
    void* sock_ = nullptr;
};

} // namespace feedtest
