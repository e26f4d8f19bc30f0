// A local HTTP server on 127.0.0.1 (port 0) that plays the Landbot Platform
// API for the erase hook's tests: each request gets the next scripted answer
// for its method (or the method's default), and is recorded.
#pragma once

#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>

#include <deque>
#include <istream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace landbot_test {

class FakeLandbotApi {
public:
    struct Answer {
        int status = 200;
        std::string retry_after; // Retry-After header, if not empty
        std::string body;
    };
    struct Seen {
        std::string method, uri, authorization;
    };

    FakeLandbotApi() {
        Poco::Net::ServerSocket socket(Poco::Net::SocketAddress("127.0.0.1", 0));
        port_ = socket.address().port();
        auto params = new Poco::Net::HTTPServerParams;
        params->setMaxThreads(4);
        params->setKeepAlive(false);
        server_ = std::make_unique<Poco::Net::HTTPServer>(new Factory(*this), socket, params);
        server_->start();
    }
    ~FakeLandbotApi() { server_->stopAll(true); }

    int port() const { return port_; }
    std::string base() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

    // The next answers to `method`, in order; then `fallback(method)`.
    void script(const std::string& method, std::vector<Answer> answers) {
        std::lock_guard lock(m_);
        for (auto& a : answers) script_[method].push_back(std::move(a));
    }
    void fallback(const std::string& method, Answer a) {
        std::lock_guard lock(m_);
        default_[method] = std::move(a);
    }
    std::vector<Seen> seen() const {
        std::lock_guard lock(m_);
        return seen_;
    }
    std::size_t count(const std::string& method) const {
        std::lock_guard lock(m_);
        std::size_t n = 0;
        for (const auto& s : seen_) n += s.method == method;
        return n;
    }

private:
    Answer next(const Poco::Net::HTTPServerRequest& req) {
        std::lock_guard lock(m_);
        seen_.push_back({req.getMethod(), req.getURI(), req.get("Authorization", "")});
        auto& q = script_[req.getMethod()];
        if (!q.empty()) {
            Answer a = q.front();
            q.pop_front();
            return a;
        }
        auto it = default_.find(req.getMethod());
        return it == default_.end() ? Answer{404, "", "{\"errors\":{\"detail\":[\"not found\"]}}"}
                                    : it->second;
    }

    class Handler : public Poco::Net::HTTPRequestHandler {
    public:
        explicit Handler(FakeLandbotApi& api) : api_(api) {}
        void handleRequest(Poco::Net::HTTPServerRequest& req,
                           Poco::Net::HTTPServerResponse& resp) override {
            std::string ignored((std::istreambuf_iterator<char>(req.stream())),
                                std::istreambuf_iterator<char>());
            Answer a = api_.next(req);
            resp.setStatus(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(a.status));
            if (!a.retry_after.empty()) resp.set("Retry-After", a.retry_after);
            if (a.status == 204) {
                resp.setContentLength(0);
                resp.send();
                return;
            }
            resp.setContentType("application/json");
            resp.setContentLength(static_cast<std::streamsize>(a.body.size()));
            resp.send() << a.body;
        }

    private:
        FakeLandbotApi& api_;
    };
    class Factory : public Poco::Net::HTTPRequestHandlerFactory {
    public:
        explicit Factory(FakeLandbotApi& api) : api_(api) {}
        Poco::Net::HTTPRequestHandler* createRequestHandler(const Poco::Net::HTTPServerRequest&) override {
            return new Handler(api_);
        }

    private:
        FakeLandbotApi& api_;
    };

    mutable std::mutex m_;
    std::map<std::string, std::deque<Answer>> script_;
    std::map<std::string, Answer> default_;
    std::vector<Seen> seen_;
    int port_ = 0;
    std::unique_ptr<Poco::Net::HTTPServer> server_;
};

} // namespace landbot_test
