#pragma once

// The admin API: /admin/v1/... on the daemon's HTTP listener, for the people
// who run and answer for the node (IT operations, the DPO, information
// governance).
//
// Every call presents a bearer token from [[admin.token]]; the token's *name*
// is who made the call. Every call, answered or refused, leaves one audit
// entry (kind "admin": actor, method, endpoint, status): the endpoint as
// registered (e.g. "/admin/v1/deadletters/retry"), never the request's own
// path, query or body, and never the token. Tokens are compared in constant
// time (SHA-256 of each, then CRYPTO_memcmp over all of them).
//
// Adding an endpoint is one call, and the API does the rest (authentication,
// read-only tokens, the audit entry, 404/405, JSON errors):
//
//     api.add("GET", "holds", [&](const admin::Call& call, http::Response& r) {
//         r.respond(200, "application/json", holds_json(call.request.query));
//     });
//
// A path ending in "/*" also takes every path below it ("holds/*" answers
// /admin/v1/holds/42; call.rest is "42"). Handlers run on HTTP threads, one
// per request, and may run concurrently with each other.

#include "http/server.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace switchboard::audit {
class AuditLog;
}

namespace switchboard::admin {

inline constexpr const char* kPrefix = "/admin/v1";

struct Token {
    std::string name;   // who, in the audit trail
    std::string secret; // the token itself (resolved from env:/file:)
    bool read_only = false;
};

// What a handler is given.
struct Call {
    const http::Request& request;
    std::string caller;   // the token's name
    std::string endpoint; // as registered, e.g. "/admin/v1/holds/*"
    std::string rest;     // for "/*" endpoints: the path below it, without '/'; else ""
};

using Handler = std::function<void(const Call& call, http::Response& response)>;

// One audit entry about one call; see append_call.
struct CallNote {
    std::string actor;    // token name, "-" when no token matched
    std::string method;   // checked: [A-Z]{1,16}, else "OTHER"
    std::string endpoint; // as registered, or kPrefix when none matched
    int status = 0;
};

// Appends `note` to the trail: kind "admin", attributes actor, method,
// endpoint, status.
void append_call(audit::AuditLog& log, std::int64_t ts_ms, const CallNote& note);

// Answers `{"error": message}` with `status`; message is escaped.
void respond_error(http::Response& r, int status, const std::string& message);
// JSON string literal (quotes included) for `text`.
std::string json_string(const std::string& text);
// The value of `key` in a query string ("a=1&format=html"), as sent (not
// percent-decoded); "" when absent.
std::string query_param(const std::string& query, const std::string& key);

class AdminApi {
public:
    // Must not block on the disk (the daemon hands it to the journal's writer).
    using AuditFn = std::function<void(CallNote note)>;

    // Throws std::invalid_argument naming the token if a token is shorter
    // than kMinTokenLength or two share a name.
    AdminApi(http::Server& server, std::vector<Token> tokens, AuditFn audit);
    ~AdminApi();
    AdminApi(const AdminApi&) = delete;
    AdminApi& operator=(const AdminApi&) = delete;

    static constexpr std::size_t kMinTokenLength = 16;

    // Registers the /admin/v1 route on the server. Throws std::runtime_error
    // if another owner holds it.
    void start();
    // Removes the route; when it returns no handler runs or will start.
    void stop();

    // method "GET", "POST", ...; path relative to /admin/v1 ("deadletters/retry"),
    // optionally ending in "/*". Returns false (and the caller should fail)
    // if it is taken or malformed. Safe to call while running.
    bool add(const std::string& method, const std::string& path, Handler handler);

    // The name of the token in `request`'s Authorization header (Bearer), or
    // nullopt. Also for /metrics.
    std::optional<std::string> authenticate(const http::Request& request) const;

    bool has_tokens() const { return !tokens_.empty(); }

private:
    struct Entry {
        Handler handler;
        bool subtree = false;
    };
    struct Known {
        std::string name;
        unsigned char digest[32];
        bool read_only = false;
    };
    void handle(const http::Request& request, http::Response& response);

    http::Server& server_;
    std::vector<Known> tokens_;
    AuditFn audit_;
    mutable std::mutex mutex_;
    // path ("/admin/v1/x" or "/admin/v1/x/*") -> method -> entry
    std::map<std::string, std::map<std::string, std::shared_ptr<const Entry>>> routes_;
    bool started_ = false;
};

} // namespace switchboard::admin
