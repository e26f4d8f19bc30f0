// Shared by the HTTP destinations (http, open311): one bounded HTTP(S)
// exchange per call, the authentication both plugins offer (bearer token or
// HMAC-SHA256 signature), what an answer means for delivery (2xx delivered,
// 408/425/429/5xx and network errors retried, other answers dead-lettered),
// Retry-After, and a bounded read of JSON answers into leaf paths.
//
// Compiled into each plugin module (plugins carry no shared library of their
// own). Nothing here logs; error texts never hold request or response bodies.
#pragma once

#include <switchboard/plugin.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sbhttp {

struct TlsOptions {
    bool verify = true;  // the server's chain and host name are checked
    std::string ca_file; // PEM bundle to trust instead of the system CAs
};

struct ClientOptions {
    std::int64_t timeout_ms = 10'000; // connect, each read/write, and the whole answer
    std::size_t max_response = 64u << 10;
    TlsOptions tls;
    std::string user_agent = "switchboard";
};

struct Request {
    std::string method = "POST";
    std::string url; // absolute http(s) URL
    std::vector<std::pair<std::string, std::string>> headers;
    std::string content_type;
    std::string body;
};

struct Reply {
    int status = 0;           // 0: no HTTP answer; `error` says why
    std::string error;        // network or TLS problem, no payload
    bool timed_out = false;
    std::string body;         // at most max_response bytes
    bool truncated = false;   // the answer was longer than max_response
    std::string content_type;
    std::string retry_after;  // the Retry-After header, as sent
};

class Client {
public:
    // Throws std::invalid_argument with the reason when the TLS settings
    // cannot be used (an unreadable or malformed ca_file).
    explicit Client(ClientOptions options);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Never throws for network or protocol problems: they come back in Reply.
    Reply send(const Request& request) const;

    const ClientOptions& options() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// nullopt if `url` is a usable absolute http(s) URL without fragment,
// else why not (no URL text in the reason).
std::optional<std::string> url_problem(const std::string& url);

// Percent-encodes for a URL path segment or a form value (RFC 3986
// unreserved characters stay; form encoding writes space as %20).
std::string percent_encode(std::string_view s);

// What an answer means for a delivery or an erase request.
sb_status classify(const Reply& reply);
// "HTTP 503", "HTTP 200 (response larger than 65536 bytes)", "timed out after 10000ms", ...
std::string describe(const Reply& reply);

// Retry-After (delta-seconds or an HTTP date) as milliseconds from now_ms.
std::optional<std::int64_t> retry_after_ms(const std::string& value, std::int64_t now_ms);

// Lowercase hex HMAC-SHA256 of `data` under `key`.
std::string hmac_sha256_hex(std::string_view key, std::string_view data);

// Authentication. HMAC: header `timestamp_header` = Unix seconds and
// `signature_header` = "sha256=" + hex HMAC-SHA256 of "<timestamp>.<body>"
// (see the http README for the receiver's check).
struct Auth {
    enum Kind { None, Bearer, Hmac } kind = None;
    std::string secret;
    std::string signature_header = "X-Switchboard-Signature";
    std::string timestamp_header = "X-Switchboard-Timestamp";
};
// The string an HMAC signature covers.
std::string signed_text(const std::string& timestamp, std::string_view body);
void authenticate(const Auth& auth, Request& request, std::int64_t now_ms);

// The schema keys both plugins share, and reading them (throws sb::Error
// naming the key on a bad combination).
std::vector<sb::Field> common_fields();
struct CommonConfig {
    ClientOptions client;
    Auth auth;
    std::int64_t retry_after_max_ms = 0;
};
CommonConfig read_common(const sb::Host& host, const std::string& plugin_name);

// Honours Retry-After across deliveries: after an answer that carried one,
// calls before the time asked for are refused without a request (the core's
// backoff decides when the next call comes; see the READMEs).
class RetryGate {
public:
    explicit RetryGate(std::int64_t max_ms) : max_ms_(max_ms) {}
    // Remembers the Retry-After of a transient answer, capped at max_ms.
    void note(const Reply& reply, std::int64_t now_ms);
    // Milliseconds still to wait, or 0.
    std::int64_t remaining(std::int64_t now_ms) const;
    void clear() { until_ms_ = 0; }

private:
    std::int64_t max_ms_;
    std::int64_t until_ms_ = 0;
};

// The leaves of a JSON answer, path -> value text (strings as they are,
// numbers in their JSON spelling, null as "null"); a top-level array is
// read as the object {"": [...]}, its leaves as "[0].id". nullopt and
// `error` (a fixed text with a byte offset, never input) if not JSON.
std::optional<std::map<std::string, std::string>> json_leaves(std::string_view body,
                                                             std::string& error);

// json_leaves() of a successful answer's body, or nullopt with `why` (the
// answer was cut at max_response bytes, or is not JSON).
std::optional<std::map<std::string, std::string>> answer_leaves(const Reply& reply,
                                                               std::size_t max_response,
                                                               std::string& why);

// A record field's value as text (strings as they are, numbers and
// booleans in their JSON spelling); nullopt for null or absent.
std::optional<std::string> field_text(const sb::RecordView& record, const std::string& path);

// Text from a peer (an error description) made fit for a log line: control
// characters dropped, digits replaced by '#', words holding '@' by "[email]",
// at most `max` bytes.
std::string scrub(std::string_view text, std::size_t max = 160);

} // namespace sbhttp
