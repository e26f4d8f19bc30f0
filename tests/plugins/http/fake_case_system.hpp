// A case system for the HTTP destinations' tests: a real HTTP (or HTTPS,
// with a certificate made by the openssl command) server on 127.0.0.1,
// port 0. Each request is recorded (method, URI, headers, body) and gets
// the next scripted answer, else the default one, or what a responder
// function decides. An answer may be delayed (a slow server), carry any
// status, headers and body (malformed, oversized), or drop the connection.
#pragma once

#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>

#include <chrono>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <istream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace casesys {

struct Answer {
    Answer(int status_ = 201, std::string body_ = "{\"reference\":\"CR-1\"}",
           std::string content_type_ = "application/json",
           std::map<std::string, std::string> headers_ = {},
           std::chrono::milliseconds delay_ = std::chrono::milliseconds(0))
        : status(status_), body(std::move(body_)), content_type(std::move(content_type_)),
          headers(std::move(headers_)), delay(delay_) {}
    int status;
    std::string body;
    std::string content_type;
    std::map<std::string, std::string> headers;
    std::chrono::milliseconds delay;
};

struct Seen {
    std::string method, uri, body;
    std::map<std::string, std::string> headers; // names lowercased
    std::string header(const std::string& lower_name) const {
        auto it = headers.find(lower_name);
        return it == headers.end() ? "" : it->second;
    }
};

// A self-signed certificate for 127.0.0.1 made with the openssl command.
struct SelfSigned {
    std::filesystem::path dir, cert, key;
    SelfSigned() {
        char tmpl[] = "/tmp/sb-casesys-tls-XXXXXX";
        if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
        dir = tmpl;
        cert = dir / "cert.pem";
        key = dir / "key.pem";
        std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1"
                          " -addext subjectAltName=IP:127.0.0.1 -keyout " +
                          key.string() + " -out " + cert.string() + " >/dev/null 2>&1";
        if (std::system(cmd.c_str()) != 0 || !std::filesystem::exists(cert))
            throw std::runtime_error("openssl could not make a test certificate");
    }
    ~SelfSigned() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
};

class FakeCaseSystem {
public:
    // Plain HTTP, or HTTPS with `tls` (its certificate and key).
    explicit FakeCaseSystem(const SelfSigned* tls = nullptr) {
        auto params = new Poco::Net::HTTPServerParams;
        params->setMaxThreads(4);
        params->setKeepAlive(false);
        if (tls) {
            Poco::Net::initializeSSL();
            ssl_ = true;
            context_ = new Poco::Net::Context(Poco::Net::Context::TLS_SERVER_USE, tls->key.string(),
                                              tls->cert.string(), "", Poco::Net::Context::VERIFY_NONE);
            Poco::Net::SecureServerSocket socket(Poco::Net::SocketAddress("127.0.0.1", 0), 64, context_);
            port_ = socket.address().port();
            server_ = std::make_unique<Poco::Net::HTTPServer>(new Factory(*this), socket, params);
        } else {
            Poco::Net::ServerSocket socket(Poco::Net::SocketAddress("127.0.0.1", 0));
            port_ = socket.address().port();
            server_ = std::make_unique<Poco::Net::HTTPServer>(new Factory(*this), socket, params);
        }
        server_->start();
    }
    ~FakeCaseSystem() {
        server_->stopAll(true);
        server_.reset();
        context_ = nullptr;
        if (ssl_) Poco::Net::uninitializeSSL();
    }

    int port() const { return port_; }
    std::string url(const std::string& path = "/cases") const {
        return std::string(ssl_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_) + path;
    }

    void script(std::vector<Answer> answers) {
        std::lock_guard lock(m_);
        for (auto& a : answers) script_.push_back(std::move(a));
    }
    void fallback(Answer a) {
        std::lock_guard lock(m_);
        default_ = std::move(a);
    }
    // Decides every answer (after the script is used up) from the request.
    void responder(std::function<Answer(const Seen&)> fn) {
        std::lock_guard lock(m_);
        responder_ = std::move(fn);
    }
    std::vector<Seen> seen() const {
        std::lock_guard lock(m_);
        return seen_;
    }
    std::size_t count() const {
        std::lock_guard lock(m_);
        return seen_.size();
    }

private:
    Answer next(const Seen& s) {
        std::lock_guard lock(m_);
        seen_.push_back(s);
        if (!script_.empty()) {
            Answer a = script_.front();
            script_.pop_front();
            return a;
        }
        if (responder_) return responder_(s);
        return default_;
    }

    class Handler : public Poco::Net::HTTPRequestHandler {
    public:
        explicit Handler(FakeCaseSystem& sys) : sys_(sys) {}
        void handleRequest(Poco::Net::HTTPServerRequest& req, Poco::Net::HTTPServerResponse& resp) override {
            Seen s;
            s.method = req.getMethod();
            s.uri = req.getURI();
            s.body.assign(std::istreambuf_iterator<char>(req.stream()), std::istreambuf_iterator<char>());
            for (const auto& [k, v] : req) {
                std::string lower;
                for (char c : k) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                s.headers[lower] = v;
            }
            Answer a = sys_.next(s);
            if (a.delay.count() > 0) std::this_thread::sleep_for(a.delay); // plays a slow server
            resp.setStatus(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(a.status));
            for (const auto& [k, v] : a.headers) resp.set(k, v);
            if (!a.content_type.empty()) resp.setContentType(a.content_type);
            resp.setContentLength(static_cast<std::streamsize>(a.body.size()));
            resp.send() << a.body;
        }

    private:
        FakeCaseSystem& sys_;
    };
    class Factory : public Poco::Net::HTTPRequestHandlerFactory {
    public:
        explicit Factory(FakeCaseSystem& sys) : sys_(sys) {}
        Poco::Net::HTTPRequestHandler* createRequestHandler(const Poco::Net::HTTPServerRequest&) override {
            return new Handler(sys_);
        }

    private:
        FakeCaseSystem& sys_;
    };

    mutable std::mutex m_;
    std::deque<Answer> script_;
    Answer default_;
    std::function<Answer(const Seen&)> responder_;
    std::vector<Seen> seen_;
    int port_ = 0;
    bool ssl_ = false;
    Poco::Net::Context::Ptr context_;
    std::unique_ptr<Poco::Net::HTTPServer> server_;
};

} // namespace casesys
