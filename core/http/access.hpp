#pragma once
// Who may use the operator pages on the daemon's listener (the dashboard; the admin API can
// call the same check). One function decides, so that adding admin tokens to the config
// changes every page at once.
//
// Without tokens, only loopback clients are let in (the listener is bound to localhost
// unless http.allow_remote says otherwise, and this keeps it so for these pages even then).
// With tokens, a request must present one, from any address:
//   Authorization: Bearer TOKEN      (scripts, the admin API)
//   Cookie: switchboard_admin=TOKEN  (a browser, for the dashboard page and its data)

#include "http/server.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::http {

struct AccessPolicy {
    std::vector<std::string> tokens; // resolved secrets; empty: loopback only
};

enum class Access { Allowed, NotLoopback, NoToken, WrongToken };

// "127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000" are loopback.
bool is_loopback(std::string_view remote);

// The token a request presents (Authorization: Bearer, else the switchboard_admin cookie).
std::optional<std::string> presented_token(const Request& request);

Access check_access(const AccessPolicy& policy, const Request& request);

// Answers a refused request (403 for a non-loopback client, 401 otherwise), naming what is
// missing and never echoing the token. Returns true if the request may go on.
bool require_access(const AccessPolicy& policy, const Request& request, Response& response);

} // namespace switchboard::http
