#include "http_client.hpp"

#include <switchboard/detail/json_record.hpp>

#include <Poco/DateTime.h>
#include <Poco/DateTimeFormat.h>
#include <Poco/DateTimeParser.h>
#include <Poco/Exception.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SSLException.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Timestamp.h>
#include <Poco/URI.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <charconv>
#include <chrono>
#include <istream>
#include <ostream>
#include <stdexcept>

namespace sbhttp {

namespace {

std::int64_t steady_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// Poco's texts for network errors name hosts and OS errors, never payloads;
// bounded all the same.
std::string network_text(const Poco::Exception& e) {
    std::string t = e.displayText();
    if (t.size() > 200) t.resize(200);
    return t;
}

} // namespace

struct Client::Impl {
    ClientOptions options;
    Poco::Net::Context::Ptr tls;
    bool ssl_initialised = false;

    ~Impl() {
        tls = nullptr;
        if (ssl_initialised) Poco::Net::uninitializeSSL();
    }
};

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>()) {
    impl_->options = std::move(options);
    Poco::Net::initializeSSL();
    impl_->ssl_initialised = true;
    const TlsOptions& t = impl_->options.tls;
    try {
        using Poco::Net::Context;
        // With a ca_file only that bundle is trusted (the department's own
        // CA); otherwise the system CAs. TLS 1.2 or newer either way.
        impl_->tls = new Context(Context::TLS_CLIENT_USE, "", "", t.ca_file,
                                 t.verify ? Context::VERIFY_RELAXED : Context::VERIFY_NONE, 9,
                                 t.ca_file.empty());
        impl_->tls->requireMinimumProtocol(Context::PROTO_TLSV1_2);
        impl_->tls->enableExtendedCertificateVerification(t.verify);
    } catch (const Poco::Exception& e) {
        throw std::invalid_argument("TLS settings unusable: " + network_text(e));
    }
}

Client::~Client() = default;

const ClientOptions& Client::options() const { return impl_->options; }

Reply Client::send(const Request& request) const {
    Reply reply;
    const ClientOptions& o = impl_->options;
    const std::int64_t deadline = steady_ms() + o.timeout_ms;
    try {
        Poco::URI uri(request.url);
        std::unique_ptr<Poco::Net::HTTPClientSession> session;
        if (uri.getScheme() == "https")
            session = std::make_unique<Poco::Net::HTTPSClientSession>(uri.getHost(), uri.getPort(),
                                                                      impl_->tls);
        else
            session = std::make_unique<Poco::Net::HTTPClientSession>(uri.getHost(), uri.getPort());
        session->setTimeout(Poco::Timespan(o.timeout_ms * 1000));
        session->setKeepAlive(false);
        // The request target exactly as written (Poco::URI would decode
        // %2F in a path segment into a '/').
        std::string target;
        std::size_t authority = request.url.find("://");
        std::size_t start = request.url.find_first_of("/?", authority + 3);
        if (start != std::string::npos) target = request.url.substr(start);
        target = target.substr(0, target.find('#'));
        if (target.empty() || target[0] == '?') target = "/" + target;
        Poco::Net::HTTPRequest req(request.method, target, Poco::Net::HTTPMessage::HTTP_1_1);
        req.set("User-Agent", o.user_agent);
        req.set("Accept", "application/json");
        for (const auto& [k, v] : request.headers) req.set(k, v);
        if (!request.content_type.empty()) req.setContentType(request.content_type);
        req.setContentLength(static_cast<std::streamsize>(request.body.size()));
        std::ostream& out = session->sendRequest(req);
        out.write(request.body.data(), static_cast<std::streamsize>(request.body.size()));
        out.flush();
        if (!out) throw Poco::Net::NetException("request body not sent");
        Poco::Net::HTTPResponse resp;
        std::istream& in = session->receiveResponse(resp);
        reply.status = static_cast<int>(resp.getStatus());
        reply.content_type = resp.getContentType();
        reply.retry_after = resp.get("Retry-After", "");
        // A bounded read: one byte past the limit tells that there was more.
        char buf[8192];
        while (in) {
            if (steady_ms() > deadline) {
                reply.timed_out = true;
                reply.error = "answer not complete after " + std::to_string(o.timeout_ms) + "ms";
                break;
            }
            std::size_t room = o.max_response + 1 - reply.body.size();
            in.read(buf, static_cast<std::streamsize>(std::min(room, sizeof buf)));
            std::streamsize n = in.gcount();
            if (n <= 0) break;
            reply.body.append(buf, static_cast<std::size_t>(n));
            if (reply.body.size() > o.max_response) {
                reply.body.resize(o.max_response);
                reply.truncated = true;
                break;
            }
        }
        bool short_body = resp.hasContentLength() &&
                          static_cast<std::int64_t>(reply.body.size()) < resp.getContentLength64();
        if (reply.error.empty() && !reply.truncated && (in.bad() || short_body))
            reply.error = "answer body cut short (connection error or timeout)";
    } catch (const Poco::TimeoutException&) {
        reply.timed_out = true;
        reply.error = "timed out after " + std::to_string(o.timeout_ms) + "ms";
    } catch (const Poco::Net::CertificateValidationException& e) {
        reply.error = "TLS certificate refused: " + network_text(e);
    } catch (const Poco::Net::SSLException& e) {
        reply.error = "TLS: " + network_text(e);
    } catch (const Poco::Net::NoMessageException&) {
        reply.error = "connection closed without an answer";
    } catch (const Poco::Net::MessageException& e) {
        reply.error = "malformed HTTP answer: " + network_text(e);
    } catch (const Poco::Exception& e) {
        reply.error = network_text(e);
    } catch (const std::exception& e) {
        reply.error = std::string("network error: ") + e.what();
    }
    if (!reply.error.empty() && reply.status >= 200 && reply.status < 300) {
        // A 2xx whose body did not arrive whole: the peer probably accepted
        // the request, but its answer is unreadable. Not counted delivered;
        // retried with the same idempotency key.
        reply.error = "HTTP " + std::to_string(reply.status) + " but " + reply.error;
        reply.status = 0;
    }
    return reply;
}

std::optional<std::string> url_problem(const std::string& url) {
    Poco::URI uri;
    try {
        uri = Poco::URI(url);
    } catch (const Poco::Exception&) {
        return "not a URL";
    }
    if (uri.getScheme() != "http" && uri.getScheme() != "https")
        return "the scheme must be http or https";
    if (uri.getHost().empty()) return "no host";
    if (!uri.getFragment().empty()) return "no fragment allowed";
    if (!uri.getUserInfo().empty()) return "no user:password@ allowed (use auth)";
    return std::nullopt;
}

std::string percent_encode(std::string_view s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    out.reserve(s.size());
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            out += ch;
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

sb_status classify(const Reply& r) {
    if (r.status == 0) return SB_ERR_TRANSIENT;
    if (r.status >= 200 && r.status < 300) return SB_OK;
    if (r.status == 408 || r.status == 425 || r.status == 429 || r.status >= 500)
        return SB_ERR_TRANSIENT;
    return SB_ERR_PERMANENT; // other 4xx, and 1xx/3xx (redirects are not followed)
}

std::string describe(const Reply& r) {
    if (r.status == 0) return r.error.empty() ? "no answer" : r.error;
    std::string out = "HTTP " + std::to_string(r.status);
    if (r.status >= 300 && r.status < 400) out += " (redirects are not followed)";
    if (r.truncated) out += " (answer larger than max_response, " + std::to_string(r.body.size()) + " bytes)";
    if (!r.retry_after.empty()) {
        bool seconds = r.retry_after.size() <= 9 &&
                       r.retry_after.find_first_not_of("0123456789") == std::string::npos;
        out += seconds ? " (Retry-After " + r.retry_after + "s)" : " (Retry-After date)";
    }
    return out;
}

std::optional<std::int64_t> retry_after_ms(const std::string& value, std::int64_t now_ms) {
    if (value.empty()) return std::nullopt;
    std::int64_t secs = 0;
    auto r = std::from_chars(value.data(), value.data() + value.size(), secs);
    if (r.ec == std::errc() && r.ptr == value.data() + value.size())
        return secs < 0 ? 0 : (secs > 86'400 * 365 ? 86'400'000LL * 365 : secs * 1000);
    Poco::DateTime when;
    int tzd = 0;
    if (!Poco::DateTimeParser::tryParse(Poco::DateTimeFormat::HTTP_FORMAT, value, when, tzd))
        return std::nullopt;
    std::int64_t at = when.timestamp().epochMicroseconds() / 1000 - static_cast<std::int64_t>(tzd) * 1000;
    return at < now_ms ? 0 : at - now_ms;
}

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(data.data()), data.size(), md, &len);
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (unsigned int k = 0; k < len; ++k) {
        out += hex[md[k] >> 4];
        out += hex[md[k] & 15];
    }
    return out;
}

std::string signed_text(const std::string& timestamp, std::string_view body) {
    std::string s;
    s.reserve(timestamp.size() + 1 + body.size());
    s += timestamp;
    s += '.';
    s += body;
    return s;
}

void authenticate(const Auth& auth, Request& request, std::int64_t now_ms) {
    switch (auth.kind) {
    case Auth::None: break;
    case Auth::Bearer: request.headers.emplace_back("Authorization", "Bearer " + auth.secret); break;
    case Auth::Hmac: {
        std::string ts = std::to_string(now_ms / 1000);
        request.headers.emplace_back(auth.timestamp_header, ts);
        request.headers.emplace_back(auth.signature_header,
                                     "sha256=" + hmac_sha256_hex(auth.secret, signed_text(ts, request.body)));
        break;
    }
    }
}

std::vector<sb::Field> common_fields() {
    using sb::Field;
    return {
        Field::string("auth").required().choices({"bearer", "hmac", "none"}).describe(
            "How requests are authenticated: bearer token, HMAC-SHA256 signature, or none (a warning)"),
        Field::string("bearer_token").secret().describe(
            "Token sent as Authorization: Bearer <token> (auth = \"bearer\")"),
        Field::string("hmac_key").secret().describe(
            "Key of the HMAC-SHA256 request signature (auth = \"hmac\")"),
        Field::string("signature_header").fallback("\"X-Switchboard-Signature\"").describe(
            "Header carrying sha256=<hex HMAC of timestamp.body> (auth = \"hmac\")"),
        Field::string("timestamp_header").fallback("\"X-Switchboard-Timestamp\"").describe(
            "Header carrying the signed Unix time in seconds (auth = \"hmac\")"),
        Field::boolean("tls_verify").fallback("true").describe(
            "Verify the server's certificate chain and host name; false only for tests (a warning)"),
        Field::path("ca_file").describe(
            "PEM file of the CA(s) to trust instead of the system CAs"),
        Field::duration("timeout").range(100, 300'000).fallback("\"10s\"").describe(
            "Longest wait to connect, for each read or write, and for the whole answer"),
        Field::size("max_response").range(1024, 16 << 20).fallback("\"64KiB\"").describe(
            "Largest answer body read; a longer one is cut and reported"),
        Field::duration("retry_after_max").range(0, 86'400'000).fallback("\"10m\"").describe(
            "Longest Retry-After honoured; 0 ignores Retry-After"),
    };
}

CommonConfig read_common(const sb::Host& host, const std::string& plugin_name) {
    CommonConfig c;
    std::string auth = host.string("auth");
    if (auth == "bearer") {
        c.auth.kind = Auth::Bearer;
        auto t = host.string_opt("bearer_token");
        if (!t || t->empty())
            throw sb::Error(SB_ERR_INVALID, "config key 'bearer_token' is required with auth = \"bearer\"");
        c.auth.secret = *t;
    } else if (auth == "hmac") {
        c.auth.kind = Auth::Hmac;
        auto k = host.string_opt("hmac_key");
        if (!k || k->size() < 16)
            throw sb::Error(SB_ERR_INVALID,
                            "config key 'hmac_key' is required with auth = \"hmac\" (at least 16 bytes)");
        c.auth.secret = *k;
    } else {
        c.auth.kind = Auth::None;
    }
    if (c.auth.kind != Auth::Bearer && host.string_opt("bearer_token"))
        throw sb::Error(SB_ERR_INVALID, "config key 'bearer_token' is set but auth is \"" + auth + "\"");
    if (c.auth.kind != Auth::Hmac && host.string_opt("hmac_key"))
        throw sb::Error(SB_ERR_INVALID, "config key 'hmac_key' is set but auth is \"" + auth + "\"");
    c.auth.signature_header = host.string("signature_header");
    c.auth.timestamp_header = host.string("timestamp_header");
    for (const char* key : {"signature_header", "timestamp_header"}) {
        std::string v = host.string(key);
        bool ok = !v.empty() && v.size() <= 64;
        for (char ch : v)
            ok = ok && ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                        (ch >= '0' && ch <= '9') || ch == '-');
        if (!ok)
            throw sb::Error(SB_ERR_INVALID, std::string("config key '") + key +
                                                "': a header name is letters, digits and '-' (1 to 64)");
    }
    c.client.tls.verify = host.boolean("tls_verify");
    c.client.tls.ca_file = host.string_opt("ca_file").value_or("");
    c.client.timeout_ms = host.duration_ms("timeout");
    c.client.max_response = static_cast<std::size_t>(host.integer("max_response"));
    c.client.user_agent = "switchboard-" + plugin_name + "/0.1";
    c.retry_after_max_ms = host.duration_ms("retry_after_max");
    return c;
}

void RetryGate::note(const Reply& reply, std::int64_t now_ms) {
    if (max_ms_ <= 0 || reply.retry_after.empty()) return;
    auto ms = retry_after_ms(reply.retry_after, now_ms);
    if (!ms) return;
    until_ms_ = now_ms + std::min(*ms, max_ms_);
}

std::int64_t RetryGate::remaining(std::int64_t now_ms) const {
    return until_ms_ > now_ms ? until_ms_ - now_ms : 0;
}

std::optional<std::map<std::string, std::string>> answer_leaves(const Reply& reply,
                                                               std::size_t max_response,
                                                               std::string& why) {
    if (reply.truncated) {
        why = "answer larger than max_response (" + std::to_string(max_response) + " bytes)";
        return std::nullopt;
    }
    std::string error;
    auto leaves = json_leaves(reply.body, error);
    if (!leaves) why = "answer is not JSON: " + error;
    return leaves;
}

std::optional<std::map<std::string, std::string>> json_leaves(std::string_view body,
                                                             std::string& error) {
    // Leading and trailing whitespace is fine; the reader wants one object,
    // so an array is wrapped as {"_":[...]} and its paths start with "_".
    std::size_t a = body.find_first_not_of(" \t\r\n");
    if (a == std::string_view::npos) {
        error = "empty answer";
        return std::nullopt;
    }
    std::string wrapped;
    std::string_view text = body;
    bool array = body[a] == '[';
    if (array) {
        wrapped = "{\"_\":";
        wrapped.append(body);
        wrapped += '}';
        text = wrapped;
    }
    std::map<std::string, std::string> out;
    sb::detail::JsonError err;
    bool ok = sb::detail::json_leaves(
        text,
        [&](std::string_view path, const sb_value& v) {
            std::string p(path);
            if (array) p = p.substr(1); // "_[0].id" -> "[0].id"
            std::string t;
            switch (v.type) {
            case SB_VALUE_STRING: t.assign(v.str, v.len); break;
            case SB_VALUE_INT: t = std::to_string(v.i); break;
            case SB_VALUE_FLOAT: sb::detail::append_json_double(t, v.f); break;
            case SB_VALUE_BOOL: t = v.i ? "true" : "false"; break;
            default: t = "null";
            }
            out[std::move(p)] = std::move(t);
            return true;
        },
        err);
    if (!ok) {
        std::size_t off = err.offset;
        if (array) off = off >= 5 ? off - 5 : 0;
        error = std::string(err.message ? err.message : "malformed JSON") + " at byte " + std::to_string(off);
        return std::nullopt;
    }
    return out;
}

std::optional<std::string> field_text(const sb::RecordView& record, const std::string& path) {
    auto f = record.get(path.c_str());
    if (!f) return std::nullopt;
    std::string t;
    switch (f->value.type) {
    case SB_VALUE_STRING: return std::string(f->str());
    case SB_VALUE_INT: return std::to_string(f->value.i);
    case SB_VALUE_FLOAT: sb::detail::append_json_double(t, f->value.f); return t;
    case SB_VALUE_BOOL: return std::string(f->value.i ? "true" : "false");
    default: return std::nullopt;
    }
}

std::string scrub(std::string_view text, std::size_t max) {
    std::string out;
    std::size_t k = 0;
    while (k < text.size() && out.size() < max) {
        std::size_t end = text.find_first_of(" \t\r\n", k);
        if (end == std::string_view::npos) end = text.size();
        std::string_view word = text.substr(k, end - k);
        if (word.find('@') != std::string_view::npos) {
            out += "[email]";
        } else {
            for (char ch : word) {
                auto c = static_cast<unsigned char>(ch);
                if (c < 0x20 || c == 0x7f) continue;
                out += (c >= '0' && c <= '9') ? '#' : ch;
            }
        }
        if (end < text.size()) out += ' ';
        k = end + 1;
    }
    if (out.size() > max) out.resize(max);
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

} // namespace sbhttp
