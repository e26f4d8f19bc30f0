#include "landbot_api.hpp"

#include <Poco/DateTime.h>
#include <Poco/DateTimeFormat.h>
#include <Poco/DateTimeParser.h>
#include <Poco/Exception.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Timestamp.h>
#include <Poco/URI.h>

#include <charconv>
#include <istream>
#include <stdexcept>

namespace landbot {

namespace {

// Retry-After is either delta-seconds or an HTTP date.
std::optional<std::int64_t> retry_after(const std::string& value) {
    if (value.empty()) return std::nullopt;
    std::int64_t secs = 0;
    auto r = std::from_chars(value.data(), value.data() + value.size(), secs);
    if (r.ec == std::errc() && r.ptr == value.data() + value.size())
        return secs < 0 ? 0 : secs * 1000;
    Poco::DateTime when;
    int tzd = 0;
    if (!Poco::DateTimeParser::tryParse(Poco::DateTimeFormat::HTTP_FORMAT, value, when, tzd))
        return std::nullopt;
    Poco::Timestamp at = when.timestamp() - static_cast<Poco::Timestamp::TimeDiff>(tzd) * 1'000'000;
    Poco::Timestamp::TimeDiff d = at - Poco::Timestamp();
    return d < 0 ? 0 : d / 1000;
}

} // namespace

struct LandbotApi::Impl {
    ApiConfig config;
    std::string scheme, host, base_path;
    Poco::UInt16 port = 0;
    Poco::Net::Context::Ptr tls;
    bool ssl_initialised = false;

    ~Impl() {
        tls = nullptr;
        if (ssl_initialised) Poco::Net::uninitializeSSL();
    }
};

LandbotApi::LandbotApi(ApiConfig config) : impl_(std::make_unique<Impl>()) {
    impl_->config = std::move(config);
    Poco::URI uri;
    try {
        uri = Poco::URI(impl_->config.base);
    } catch (const Poco::Exception&) {
        throw std::invalid_argument("not a URL");
    }
    impl_->scheme = uri.getScheme();
    if (impl_->scheme != "http" && impl_->scheme != "https")
        throw std::invalid_argument("the scheme must be http or https");
    impl_->host = uri.getHost();
    if (impl_->host.empty()) throw std::invalid_argument("no host");
    if (!uri.getQuery().empty() || !uri.getFragment().empty())
        throw std::invalid_argument("no query or fragment allowed");
    impl_->port = uri.getPort();
    impl_->base_path = uri.getPath();
    while (!impl_->base_path.empty() && impl_->base_path.back() == '/') impl_->base_path.pop_back();
    if (impl_->scheme == "https") {
        Poco::Net::initializeSSL();
        impl_->ssl_initialised = true;
        // Verify the server against the system CAs, host name included
        // (Poco's extended verification), TLS 1.2 or newer.
        impl_->tls = new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, "",
                                            Poco::Net::Context::VERIFY_RELAXED, 9, true);
        impl_->tls->requireMinimumProtocol(Poco::Net::Context::PROTO_TLSV1_2);
        impl_->tls->enableExtendedCertificateVerification(true);
    }
}

LandbotApi::~LandbotApi() = default;

ApiReply LandbotApi::call(const std::string& method, const std::string& path) const {
    ApiReply reply;
    try {
        std::unique_ptr<Poco::Net::HTTPClientSession> session;
        if (impl_->tls)
            session = std::make_unique<Poco::Net::HTTPSClientSession>(impl_->host, impl_->port,
                                                                      impl_->tls);
        else
            session = std::make_unique<Poco::Net::HTTPClientSession>(impl_->host, impl_->port);
        session->setTimeout(Poco::Timespan(impl_->config.timeout_ms * 1000));
        session->setKeepAlive(false);
        Poco::Net::HTTPRequest req(method, impl_->base_path + path,
                                   Poco::Net::HTTPMessage::HTTP_1_1);
        req.set("Authorization", "Token " + impl_->config.token);
        req.set("Accept", "application/json");
        req.set("User-Agent", "switchboard-landbot/0.1");
        if (method != "GET" && method != "HEAD") req.setContentLength(0);
        session->sendRequest(req);
        Poco::Net::HTTPResponse resp;
        std::istream& in = session->receiveResponse(resp);
        // Read (bounded) and drop the body so the exchange completes.
        char buf[4096];
        std::size_t total = 0;
        while (in && total < (64u << 10)) {
            in.read(buf, sizeof buf);
            total += static_cast<std::size_t>(in.gcount());
            if (in.gcount() == 0) break;
        }
        reply.status = static_cast<int>(resp.getStatus());
        reply.retry_after_ms = retry_after(resp.get("Retry-After", ""));
    } catch (const Poco::TimeoutException&) {
        reply.status = 0;
        reply.error = "timed out";
    } catch (const Poco::Exception& e) {
        reply.status = 0;
        reply.error = e.name() ? std::string(e.name()) : std::string("network error");
    } catch (const std::exception&) {
        reply.status = 0;
        reply.error = "network error";
    }
    return reply;
}

} // namespace landbot
