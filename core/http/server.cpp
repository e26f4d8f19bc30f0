#include "http/server.hpp"

#include <Poco/Exception.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerRequestImpl.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/ThreadPool.h>
#include <Poco/Timespan.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <istream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>

namespace switchboard::http {

namespace {

constexpr int kDebug = 1, kInfo = 2, kWarn = 3, kError = 4;

// After answering without reading the whole body we close the connection. Closing a socket
// with unread data makes the kernel send RST, which can destroy our answer before the client
// reads it; so we read and discard up to this much first ("lingering close").
constexpr std::uint64_t kDrainLimit = 1 << 20;
constexpr std::chrono::milliseconds kDrainTime{1000};

// remove_routes() waits without limit (its guarantee needs it) but says so if it takes long.
constexpr std::chrono::seconds kSlowRemovalWarning{5};

using Clock = std::chrono::steady_clock;

char lower_ascii(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = lower_ascii(c);
    return out;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower_ascii(a[i]) != lower_ascii(b[i])) return false;
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Paths and methods come from the network: keep log lines single-line, short and printable.
std::string log_safe(std::string_view s) {
    constexpr std::size_t kMax = 200;
    std::string out;
    for (char c : s.substr(0, kMax)) {
        auto u = static_cast<unsigned char>(c);
        out.push_back(u > 0x20 && u < 0x7f ? c : '?');
    }
    if (s.size() > kMax) out += "...";
    return out;
}

std::string host_port(const std::string& host, std::uint16_t port) {
    bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

bool is_tchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool valid_header_name(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

// CR/LF in a value would let a handler (or data it echoes) split the response.
bool valid_header_value(std::string_view s) {
    return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

bool valid_method(std::string_view m) {
    if (m == "*") return true;
    return !m.empty() && m.size() <= 32 &&
           std::all_of(m.begin(), m.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

// Visible ASCII only, absolute, and no dot segments: a route must mean one thing.
bool valid_path(std::string_view p) {
    if (p.empty() || p.front() != '/' || p.size() > 2048) return false;
    for (char c : p) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f || c == '?' || c == '#') return false;
    }
    std::size_t start = 1;
    while (start <= p.size()) {
        std::size_t end = p.find('/', start);
        if (end == std::string_view::npos) end = p.size();
        std::string_view seg = p.substr(start, end - start);
        if (seg == "." || seg == "..") return false;
        start = end + 1;
    }
    return true;
}

// Splits a request target into path and query. Accepts origin form ("/a?b") and absolute
// form ("http://host/a?b", which HTTP/1.1 servers must accept).
std::optional<std::pair<std::string, std::string>> split_target(std::string_view target) {
    for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
        if (target.size() >= scheme.size() && iequals(target.substr(0, scheme.size()), scheme)) {
            std::string_view rest = target.substr(scheme.size());
            std::size_t slash = rest.find_first_of("/?");
            if (slash == std::string_view::npos) return std::pair<std::string, std::string>{"/", ""};
            target = rest.substr(slash);
            if (target.front() == '?') return std::pair<std::string, std::string>{"/", std::string(target.substr(1))};
            break;
        }
    }
    std::size_t q = target.find('?');
    std::string_view path = target.substr(0, q);
    std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
    if (!valid_path(path)) return std::nullopt;
    for (char c : query) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f || c == '#') return std::nullopt;
    }
    return std::pair<std::string, std::string>{std::string(path), std::string(query)};
}

// Content-Length as digits only; Poco's own parser accepts a sign.
std::optional<std::uint64_t> parse_length(std::string_view s) {
    s = trim(s);
    if (s.empty() || s.size() > 18) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return v;
}

std::string error_json(std::string_view message) {
    // Only fixed messages go here, so no escaping is needed.
    return "{\"error\":\"" + std::string(message) + "\"}";
}

struct Route {
    std::string method, path, owner;
    Handler handler;
    // Calls in progress; remove_routes() sets `removed` and waits for active to drain.
    std::mutex m;
    std::condition_variable cv;
    int active = 0;
    bool removed = false;
};

// Path → routes on that path. Published copy-on-write, so request threads read a snapshot
// without holding a lock while they run.
using RouteTable = std::map<std::string, std::vector<std::shared_ptr<Route>>, std::less<>>;

// The route whose handler this thread is running, so that remove_routes() from inside that
// handler does not wait for itself, and the server that runs it, so stop() can refuse.
thread_local const Route* t_current_route = nullptr;
thread_local const void* t_current_server = nullptr;

struct Match {
    std::shared_ptr<Route> route; // null: 404 or 405
    bool path_known = false;      // true and no route: 405
    std::string allow;
};

Match lookup(const RouteTable& table, std::string_view path, std::string_view method) {
    Match m;
    const std::vector<std::shared_ptr<Route>>* entries = nullptr;
    // Longest prefix first: the path itself, then each parent, ending with "/".
    std::string_view cur = path;
    for (;;) {
        auto it = table.find(cur.empty() ? std::string_view("/") : cur);
        if (it != table.end()) {
            entries = &it->second;
            break;
        }
        if (cur.empty()) break;
        cur = cur.substr(0, cur.rfind('/'));
    }
    if (!entries) return m;
    m.path_known = true;
    std::shared_ptr<Route> any, get;
    std::set<std::string> methods;
    for (const auto& r : *entries) {
        if (r->method == method) {
            m.route = r;
            return m;
        }
        if (r->method == "*") any = r;
        if (r->method == "GET") get = r;
        methods.insert(r->method);
    }
    if (any) {
        m.route = any;
    } else if (method == "HEAD" && get) {
        m.route = get; // HEAD is GET without the body
    } else {
        if (methods.count("GET")) methods.insert("HEAD");
        for (const auto& x : methods) m.allow += (m.allow.empty() ? "" : ", ") + x;
    }
    return m;
}

enum class BodyResult { ok, too_large, bad };

// Reads at most max + 1 bytes, so an oversized body is noticed without holding it.
BodyResult read_body(std::istream& in, std::size_t max, std::string& out) {
    char buf[16384];
    for (;;) {
        std::size_t want = std::min<std::size_t>(sizeof buf, max - out.size() + 1);
        in.read(buf, static_cast<std::streamsize>(want));
        auto n = static_cast<std::size_t>(in.gcount());
        if (in.bad()) return BodyResult::bad; // malformed chunk, timeout, reset
        if (out.size() + n > max) return BodyResult::too_large;
        out.append(buf, n);
        if (in.eof()) return BodyResult::ok;
    }
}

} // namespace

const std::string* Request::header(std::string_view name) const {
    for (const auto& h : headers)
        if (iequals(h.first, name)) return &h.second;
    return nullptr;
}

void Response::respond(int code, std::string type, std::string text) {
    status = code;
    content_type = std::move(type);
    body = std::move(text);
    responded = true;
}

struct Server::Impl {
    Options opt;
    LogFn log_fn;

    mutable std::mutex routes_mutex; // serialises writers; readers only copy the pointer
    std::shared_ptr<const RouteTable> routes = std::make_shared<RouteTable>();

    std::mutex lifecycle; // start() and stop()
    std::unique_ptr<Poco::ThreadPool> pool;
    std::unique_ptr<Poco::Net::HTTPServer> server;
    std::atomic<bool> stopping{false};
    std::atomic<std::uint16_t> bound_port{0};

    // Requests inside handle(), which stop() waits for.
    std::mutex inflight_mutex;
    std::condition_variable inflight_cv;
    int inflight = 0;

    struct Reply {
        int status = 500;
        std::string content_type = "application/json";
        std::string body;
        std::vector<std::pair<std::string, std::string>> headers;
    };

    class RequestHandler final : public Poco::Net::HTTPRequestHandler {
    public:
        explicit RequestHandler(Impl& impl) : impl_(impl) {}
        void handleRequest(Poco::Net::HTTPServerRequest& req,
                           Poco::Net::HTTPServerResponse& resp) override {
            impl_.handle(req, resp);
        }

    private:
        Impl& impl_;
    };

    class Factory final : public Poco::Net::HTTPRequestHandlerFactory {
    public:
        explicit Factory(Impl& impl) : impl_(impl) {}
        Poco::Net::HTTPRequestHandler* createRequestHandler(
            const Poco::Net::HTTPServerRequest& req) override {
            // Poco sends "100 Continue" before our handler runs unless the status is no longer
            // 200: refuse an announced oversized body here, so the client never sends it.
            if (req.getExpectContinue() && req.has("Content-Length")) {
                auto len = parse_length(req.get("Content-Length"));
                if (len && *len > impl_.opt.max_body)
                    req.response().setStatus(Poco::Net::HTTPResponse::HTTP_REQUEST_ENTITY_TOO_LARGE);
            }
            return new RequestHandler(impl_);
        }

    private:
        Impl& impl_;
    };

    Impl(Options o, LogFn l) : opt(std::move(o)), log_fn(std::move(l)) {}

    void log(int level, const std::string& message) const noexcept {
        if (!log_fn) return;
        try {
            log_fn(level, message);
        } catch (...) {
            // A failing log sink must not take a request down with it.
        }
    }

    std::shared_ptr<const RouteTable> snapshot() const {
        std::lock_guard lock(routes_mutex);
        return routes;
    }

    static bool acquire(Route& r) {
        std::lock_guard lock(r.m);
        if (r.removed) return false;
        ++r.active;
        return true;
    }

    static void release(Route& r) {
        std::lock_guard lock(r.m);
        if (--r.active == 0 || r.removed) r.cv.notify_all();
    }

    static Reply error_reply(int status, std::string_view message) {
        Reply r;
        r.status = status;
        r.body = error_json(message);
        return r;
    }

    Reply too_large_reply() const {
        Reply r;
        r.status = 413;
        r.body = "{\"error\":\"body too large\",\"limit\":" + std::to_string(opt.max_body) + "}";
        return r;
    }

    Reply call(Route& route, const Request& req) {
        Response resp;
        bool threw = false;
        {
            struct Scope {
                Route& route;
                Scope(Impl& i, Route& r) : route(r) {
                    t_current_route = &r;
                    t_current_server = &i;
                }
                ~Scope() {
                    t_current_route = nullptr;
                    t_current_server = nullptr;
                    release(route);
                }
            } scope(*this, route);
            try {
                route.handler(req, resp);
            } catch (...) {
                // The exception's text is not logged: handlers parse citizen data and
                // messages often quote it.
                threw = true;
            }
        }
        const std::string where = log_safe(req.method) + " " + log_safe(req.path) + " (owner " + route.owner + ")";
        if (threw) {
            log(kError, "handler for " + where + " threw; answered 500");
            return error_reply(500, "internal error");
        }
        if (!resp.responded) {
            log(kError, "handler for " + where + " did not respond; answered 500");
            return error_reply(500, "internal error");
        }
        if (resp.status < 200 || resp.status > 599) {
            log(kError, "handler for " + where + " set invalid status " + std::to_string(resp.status) +
                            "; answered 500");
            return error_reply(500, "internal error");
        }
        Reply r;
        r.status = resp.status;
        r.content_type = std::move(resp.content_type);
        r.body = std::move(resp.body);
        r.headers = std::move(resp.headers);
        return r;
    }

    void handle(Poco::Net::HTTPServerRequest& preq, Poco::Net::HTTPServerResponse& presp) {
        const auto t0 = Clock::now();
        {
            std::lock_guard lock(inflight_mutex);
            ++inflight;
        }
        struct InflightGuard {
            Impl& impl;
            ~InflightGuard() {
                std::lock_guard lock(impl.inflight_mutex);
                if (--impl.inflight == 0) impl.inflight_cv.notify_all();
            }
        } inflight_guard{*this};

        Request req;
        req.method = preq.getMethod();
        Reply reply;
        bool keep_alive = presp.getKeepAlive();
        bool framing_ok = false;         // we know where the body ends
        bool body_pending = false;       // body bytes remain unread on the connection
        std::optional<std::uint64_t> content_length;
        // Poco sent "100 Continue" (so the client will send its body) unless our factory
        // already refused the request.
        const bool body_coming = !preq.getExpectContinue() ||
                                 presp.getStatus() == Poco::Net::HTTPResponse::HTTP_OK;

        [&] {
            auto target = split_target(preq.getURI());
            if (!target) {
                reply = error_reply(400, "bad request target");
                return;
            }
            req.path = std::move(target->first);
            req.query = std::move(target->second);

            int length_headers = 0;
            std::optional<std::string> transfer_encoding;
            for (const auto& [name, value] : preq) {
                req.headers.emplace_back(lower(name), value);
                if (iequals(name, "content-length")) {
                    ++length_headers;
                    content_length = parse_length(value);
                } else if (iequals(name, "transfer-encoding")) {
                    transfer_encoding = value;
                }
            }
            // Ambiguous framing is how requests get smuggled past proxies: refuse it.
            if (transfer_encoding) {
                if (length_headers > 0 || !iequals(trim(*transfer_encoding), "chunked")) {
                    reply = error_reply(400, "unsupported or ambiguous transfer-encoding");
                    body_pending = true;
                    return;
                }
            } else if (length_headers > 1 || (length_headers == 1 && !content_length)) {
                reply = error_reply(400, "invalid content-length");
                body_pending = true;
                return;
            }
            framing_ok = true;
            // Without Content-Length or chunked framing a request has no body (RFC 9112 6.3).
            body_pending = transfer_encoding.has_value() || (content_length && *content_length > 0);

            if (stopping.load()) {
                reply = error_reply(503, "server stopping");
                keep_alive = false;
                return;
            }
            auto match = lookup(*snapshot(), req.path, req.method);
            if (!match.path_known) {
                reply = error_reply(404, "no such route");
                return;
            }
            if (!match.route) {
                reply = error_reply(405, "method not allowed");
                reply.headers.emplace_back("Allow", match.allow);
                return;
            }
            if (content_length && *content_length > opt.max_body) {
                reply = too_large_reply();
                return;
            }
            if (body_pending) {
                if (content_length) req.body.reserve(static_cast<std::size_t>(*content_length));
                switch (read_body(preq.stream(), opt.max_body, req.body)) {
                case BodyResult::ok:
                    body_pending = false;
                    if (content_length && req.body.size() != *content_length) {
                        reply = error_reply(400, "truncated body");
                        framing_ok = false;
                        return;
                    }
                    break;
                case BodyResult::too_large:
                    reply = too_large_reply();
                    req.body.clear();
                    return;
                case BodyResult::bad:
                    reply = error_reply(400, "malformed body");
                    framing_ok = false;
                    return;
                }
            }
            req.remote = preq.clientAddress().toString();

            // The route may have been removed while we read the body; a fresh lookup then finds
            // what replaced it (publication precedes the `removed` flag).
            for (int attempt = 0; !acquire(*match.route); ++attempt) {
                match = lookup(*snapshot(), req.path, req.method);
                if (!match.route || attempt == 3) {
                    reply = error_reply(404, "no such route");
                    return;
                }
            }
            reply = call(*match.route, req);
        }();

        // A connection whose body we did not consume cannot carry another request.
        if (body_pending || !framing_ok) keep_alive = false;
        send(preq, presp, reply, keep_alive);
        if (body_pending && framing_ok && body_coming) {
            std::uint64_t consumed = req.body.size();
            if (!content_length || *content_length - consumed <= kDrainLimit) drain(preq);
        }

        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
        log(kDebug, log_safe(req.method) + " " + log_safe(req.path.empty() ? req_path(preq) : req.path) +
                        " -> " + std::to_string(reply.status) + " (" + std::to_string(ms) + " ms)");
    }

    void send(Poco::Net::HTTPServerRequest& preq, Poco::Net::HTTPServerResponse& presp, Reply& reply,
              bool keep_alive) {
        try {
            presp.setStatusAndReason(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(reply.status));
            if (!reply.content_type.empty() && valid_header_value(reply.content_type))
                presp.setContentType(reply.content_type);
            bool dropped = false;
            for (const auto& [name, value] : reply.headers) {
                if (!valid_header_name(name) || !valid_header_value(value) ||
                    iequals(name, "content-length") || iequals(name, "transfer-encoding") ||
                    iequals(name, "connection")) {
                    dropped = true;
                    continue;
                }
                if (iequals(name, "content-type"))
                    presp.setContentType(value);
                else
                    presp.add(name, value);
            }
            if (dropped)
                log(kWarn, "dropped invalid or reserved response headers on " +
                               log_safe(preq.getMethod()) + " " + log_safe(req_path(preq)));
            presp.setKeepAlive(keep_alive);
            if (reply.status == 204 || reply.status == 304) reply.body.clear();
            if (preq.getMethod() == "HEAD") {
                presp.setChunkedTransferEncoding(false);
                presp.setContentLength64(static_cast<Poco::Int64>(reply.body.size()));
                presp.send().flush();
            } else {
                presp.sendBuffer(reply.body.data(), reply.body.size());
            }
        } catch (const Poco::Exception&) {
            // The client went away; nothing more to say on this connection.
            presp.setKeepAlive(false);
            log(kDebug, "client went away before the response was sent");
        } catch (const std::exception&) {
            presp.setKeepAlive(false);
        }
    }

    static std::string req_path(const Poco::Net::HTTPServerRequest& preq) {
        const std::string& uri = preq.getURI();
        return uri.substr(0, uri.find('?'));
    }

    // Reads and discards what is left of the body, within kDrainLimit and kDrainTime.
    void drain(Poco::Net::HTTPServerRequest& preq) {
        try {
            if (auto* impl = dynamic_cast<Poco::Net::HTTPServerRequestImpl*>(&preq))
                impl->socket().setReceiveTimeout(Poco::Timespan(
                    static_cast<Poco::Timespan::TimeDiff>(kDrainTime.count()) * 1000));
            std::istream& in = preq.stream();
            const auto deadline = Clock::now() + kDrainTime;
            char buf[16384];
            std::uint64_t total = 0;
            while (total < kDrainLimit && Clock::now() < deadline) {
                in.read(buf, sizeof buf);
                total += static_cast<std::uint64_t>(in.gcount());
                if (!in) break;
            }
        } catch (...) {
            // Best effort only: the connection is closed next either way.
        }
    }
};

Server::Server(Options options, LogFn log) {
    if (options.threads < 1 || options.threads > 1024)
        throw std::invalid_argument("http server: threads must be 1..1024, got " +
                                    std::to_string(options.threads));
    if (options.timeout_ms < 1)
        throw std::invalid_argument("http server: timeout_ms must be positive, got " +
                                    std::to_string(options.timeout_ms));
    if (options.max_queued < 1)
        throw std::invalid_argument("http server: max_queued must be positive, got " +
                                    std::to_string(options.max_queued));
    if (options.host.empty()) throw std::invalid_argument("http server: host must not be empty");
    impl_ = std::make_unique<Impl>(std::move(options), std::move(log));
}

Server::~Server() {
    try {
        stop();
    } catch (...) {
        // Destructors must not throw; stop() only throws when misused from a handler.
    }
}

bool Server::add_route(const std::string& method, const std::string& path, Handler h,
                       const std::string& owner) {
    auto& impl = *impl_;
    if (!valid_method(method) || !valid_path(path) || !h) {
        impl.log(kWarn, "refused route " + log_safe(method) + " " + log_safe(path) + " of " + owner +
                            ": invalid method, path or handler");
        return false;
    }
    std::string norm = path;
    while (norm.size() > 1 && norm.back() == '/') norm.pop_back();

    auto route = std::make_shared<Route>();
    route->method = method;
    route->path = norm;
    route->owner = owner;
    route->handler = std::move(h);
    {
        std::lock_guard lock(impl.routes_mutex);
        if (auto it = impl.routes->find(norm); it != impl.routes->end()) {
            for (const auto& r : it->second) {
                if (r->method == method) {
                    impl.log(kWarn, "refused route " + method + " " + norm + " of " + owner +
                                        ": already registered by " + r->owner);
                    return false;
                }
            }
        }
        auto next = std::make_shared<RouteTable>(*impl.routes);
        (*next)[norm].push_back(std::move(route));
        impl.routes = std::move(next);
    }
    impl.log(kDebug, "route " + method + " " + norm + " added for " + owner);
    return true;
}

void Server::remove_routes(const std::string& owner) {
    auto& impl = *impl_;
    std::vector<std::shared_ptr<Route>> removed;
    {
        std::lock_guard lock(impl.routes_mutex);
        auto next = std::make_shared<RouteTable>();
        for (const auto& [path, entries] : *impl.routes) {
            std::vector<std::shared_ptr<Route>> kept;
            for (const auto& r : entries) (r->owner == owner ? removed : kept).push_back(r);
            if (!kept.empty()) next->emplace(path, std::move(kept));
        }
        if (removed.empty()) return;
        impl.routes = std::move(next);
    }
    // Published first, flagged second: a request that loses the race re-reads the table.
    for (const auto& r : removed) {
        std::unique_lock lock(r->m);
        r->removed = true;
        const int self = t_current_route == r.get() ? 1 : 0;
        auto idle = [&] { return r->active <= self; };
        if (!r->cv.wait_for(lock, kSlowRemovalWarning, idle)) {
            impl.log(kWarn, "removing routes of " + owner + ": still waiting for a running " +
                                r->method + " " + r->path + " handler");
            r->cv.wait(lock, idle);
        }
    }
    impl.log(kDebug, "removed " + std::to_string(removed.size()) + " route(s) of " + owner);
}

void Server::start() {
    auto& impl = *impl_;
    std::lock_guard lock(impl.lifecycle);
    const auto& o = impl.opt;
    if (impl.server)
        throw std::logic_error("http server already listening on " + host_port(o.host, impl.bound_port));

    const bool tls = !o.tls_cert.empty() || !o.tls_key.empty();
    Poco::Net::ServerSocket socket;
    if (tls) {
        if (o.tls_cert.empty() || o.tls_key.empty())
            throw std::runtime_error("cannot listen on " + host_port(o.host, o.port) +
                                     ": TLS needs both a certificate and a key");
        try {
            // No client certificates: callers authenticate with bearer tokens.
            Poco::Net::Context::Ptr context = new Poco::Net::Context(
                Poco::Net::Context::TLS_SERVER_USE, o.tls_key, o.tls_cert, "",
                Poco::Net::Context::VERIFY_NONE, 9, false,
                "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!RC4");
            context->disableProtocols(Poco::Net::Context::PROTO_SSLV2 | Poco::Net::Context::PROTO_SSLV3 |
                                      Poco::Net::Context::PROTO_TLSV1 | Poco::Net::Context::PROTO_TLSV1_1);
            socket = Poco::Net::SecureServerSocket(context);
        } catch (const Poco::Exception& e) {
            throw std::runtime_error("cannot listen on " + host_port(o.host, o.port) +
                                     ": cannot load TLS certificate " + o.tls_cert + " or key " +
                                     o.tls_key + ": " + e.displayText());
        }
    }
    try {
        // SO_REUSEADDR lets a restart bind while old connections sit in TIME_WAIT; without
        // SO_REUSEPORT a second live listener on the same port still fails, as it should.
        socket.bind(Poco::Net::SocketAddress(o.host, o.port), true, false);
        socket.listen(std::max(64, o.max_queued));
    } catch (const Poco::Exception& e) {
        throw std::runtime_error("cannot listen on " + host_port(o.host, o.port) + ": " + e.displayText());
    }
    impl.bound_port = socket.address().port();

    Poco::Net::HTTPServerParams::Ptr params = new Poco::Net::HTTPServerParams;
    params->setMaxThreads(o.threads);
    params->setMaxQueued(o.max_queued);
    // Short: Poco's dispatcher notices stop() only between connections, so a
    // thread busy with one (a keep-alive wait) when stop() comes then waits
    // out its whole idle time before it ends, and stop() waits for it (with
    // 60 s, longer than the daemon's shutdown watchdog). An idle thread
    // leaving after 1 s costs a thread start on the next burst.
    params->setThreadIdleTime(Poco::Timespan(1, 0));
    params->setTimeout(Poco::Timespan(static_cast<Poco::Timespan::TimeDiff>(o.timeout_ms) * 1000));
    // Keep-alive helps webhook senders, but each idle connection holds one of few threads:
    // keep the idle wait short.
    params->setKeepAlive(true);
    params->setKeepAliveTimeout(Poco::Timespan(
        static_cast<Poco::Timespan::TimeDiff>(std::min(o.timeout_ms, 5000)) * 1000));
    params->setMaxKeepAliveRequests(1000);

    // Our own pool, not Poco's default one, so stop() can wait for exactly our threads.
    impl.pool = std::make_unique<Poco::ThreadPool>("http", 1, o.threads);
    impl.server = std::make_unique<Poco::Net::HTTPServer>(new Impl::Factory(impl), *impl.pool, socket, params);
    impl.stopping = false;
    impl.server->start();
    impl.log(kInfo, std::string("listening on ") + (tls ? "https://" : "http://") +
                        host_port(o.host, impl.bound_port));
}

std::uint16_t Server::port() const { return impl_->bound_port; }

bool Server::tls() const { return !impl_->opt.tls_cert.empty(); }

void Server::stop() {
    auto& impl = *impl_;
    if (t_current_server == &impl)
        throw std::logic_error("http server: stop() called from one of its own handlers");
    std::lock_guard lock(impl.lifecycle);
    if (!impl.server) return;

    impl.stopping = true;   // requests still arriving on open connections get 503
    impl.server->stop();    // no new connections
    {
        std::unique_lock wait(impl.inflight_mutex);
        if (!impl.inflight_cv.wait_for(wait, std::chrono::milliseconds(impl.opt.timeout_ms),
                                       [&] { return impl.inflight == 0; }))
            impl.log(kError, std::to_string(impl.inflight) + " request(s) still running " +
                                 std::to_string(impl.opt.timeout_ms) +
                                 " ms after stop; closing their connections and waiting for them");
    }
    // Closes idle keep-alive connections (and any straggler's), so the pool can drain.
    impl.server->stopAll(true);
    impl.pool->joinAll();
    impl.server.reset();
    impl.pool.reset();
    impl.log(kInfo, "stopped listening on " + host_port(impl.opt.host, impl.bound_port));
}

} // namespace switchboard::http
