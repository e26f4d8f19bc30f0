// landbot: a minimal client for the Landbot Platform API (the agent token,
// `Authorization: Token …`), used by the erase hook. One request per
// session, bounded timeouts, the response body read (bounded) and dropped:
// it may hold the customer's data and nothing here needs it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace landbot {

struct ApiConfig {
    std::string base;  // e.g. "https://api.landbot.io/v1"
    std::string token; // agent token
    std::int64_t timeout_ms = 10'000;
};

struct ApiReply {
    int status = 0;                         // 0: no HTTP answer (see error)
    std::optional<std::int64_t> retry_after_ms; // from Retry-After, if given
    std::string error;                      // network error text (no payload)
};

class LandbotApi {
public:
    // Throws std::invalid_argument if `base` is not an http(s) URL.
    explicit LandbotApi(ApiConfig config);
    ~LandbotApi();
    LandbotApi(const LandbotApi&) = delete;
    LandbotApi& operator=(const LandbotApi&) = delete;

    // `path` below the base, e.g. "/customers/123/".
    ApiReply call(const std::string& method, const std::string& path) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace landbot
