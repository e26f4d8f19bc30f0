#pragma once
// The daemon's one HTTP listener. Plugins (webhook sources, the dashboard, metrics) register
// routes on it at run time; the server owns framing, limits and error answers so that no
// plugin has to get those right on its own.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace switchboard::http {

// What a handler sees: the whole request, already bounded by Options::max_body.
struct Request {
    std::string method;
    std::string path;   // as sent (not percent-decoded), without the query
    std::string query;  // without '?'; "" if none
    std::vector<std::pair<std::string, std::string>> headers; // names lowercased, in order
    std::string body;
    std::string remote; // "ip:port"

    // Case-insensitive; the first header of that name, or nullptr.
    const std::string* header(std::string_view name) const;
};

struct Response {
    int status = 500;
    std::string content_type = "application/json";
    std::string body;
    // Extra response headers. Content-Length, Transfer-Encoding and Connection are the
    // server's to set and are dropped; a Content-Type here replaces content_type.
    std::vector<std::pair<std::string, std::string>> headers;
    bool responded = false;

    void respond(int status, std::string content_type, std::string body);
};

using Handler = std::function<void(const Request&, Response&)>;
// level: 0 trace, 1 debug, 2 info, 3 warn, 4 error (as sb_log_level).
using LogFn = std::function<void(int level, const std::string& message)>;

class Server {
public:
    struct Options {
        std::string host = "127.0.0.1";
        std::uint16_t port = 8080; // 0: any free port, see port()
        std::size_t max_body = 1 << 20;
        int threads = 4;           // concurrent connections served
        int timeout_ms = 30000;    // socket send/receive timeout; also bounds stop()
        int max_queued = 256;      // accepted connections waiting for a thread
        // Both set: HTTPS with this PEM certificate (chain) and key; start() throws if they
        // cannot be loaded.
        std::string tls_cert, tls_key;
    };

    // Throws std::invalid_argument if an option is out of range.
    Server(Options options, LogFn log);
    ~Server(); // stops if running
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // method: "GET", "POST", ... or "*" (any). A route matches when the request path equals
    // `path` or starts with `path` + "/"; "/" matches every path. The longest matching path
    // wins, then the exact method, then "*"; HEAD falls back to GET.
    // Returns false (and logs why) if (method, path) is already registered, or if method,
    // path or handler is invalid. Safe to call while running.
    bool add_route(const std::string& method, const std::string& path, Handler h,
                   const std::string& owner);

    // Removes every route of `owner`. When it returns, no handler of that owner is running or
    // will start. Called from inside one of the owner's own handlers, it waits for the others
    // only (no self-deadlock).
    void remove_routes(const std::string& owner);

    // Binds and listens. Throws std::runtime_error("cannot listen on <host>:<port>: <reason>")
    // on failure and std::logic_error if already running.
    void start();

    // True when serving HTTPS.
    bool tls() const;

    // The bound port (useful when Options.port == 0); 0 before the first start().
    std::uint16_t port() const;

    // Graceful: stops accepting, lets in-flight handlers finish (waiting up to timeout_ms,
    // then closes their connections and logs an error, and still waits for them to return,
    // since they use this object). Idempotent. Must not be called from a handler
    // (std::logic_error).
    void stop();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace switchboard::http
