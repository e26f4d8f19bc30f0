#include "http/access.hpp"

#include <cctype>

namespace switchboard::http {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
            return false;
    return true;
}

// Compares without stopping at the first difference, so timing says nothing of the token.
bool same_token(std::string_view a, std::string_view b) {
    unsigned char diff = a.size() == b.size() ? 0 : 1;
    for (std::size_t i = 0; i < a.size(); ++i)
        diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
    return diff == 0;
}

} // namespace

bool is_loopback(std::string_view remote) {
    std::string_view host = remote;
    if (!host.empty() && host.front() == '[') {
        auto close = host.find(']');
        if (close == std::string_view::npos) return false;
        host = host.substr(1, close - 1);
        if (host == "::1") return true;
        constexpr std::string_view mapped = "::ffff:";
        if (host.size() > mapped.size() && iequals(host.substr(0, mapped.size()), mapped))
            host.remove_prefix(mapped.size());
        else
            return false;
    } else {
        auto colon = host.rfind(':');
        if (colon != std::string_view::npos) host = host.substr(0, colon);
    }
    return host.substr(0, 4) == "127.";
}

std::optional<std::string> presented_token(const Request& request) {
    if (const std::string* auth = request.header("authorization")) {
        std::string_view v = trim(*auth);
        if (v.size() > 7 && iequals(v.substr(0, 7), "Bearer ")) return std::string(trim(v.substr(7)));
    }
    if (const std::string* cookie = request.header("cookie")) {
        std::string_view rest = *cookie;
        while (!rest.empty()) {
            auto semi = rest.find(';');
            std::string_view part = trim(rest.substr(0, semi));
            rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
            constexpr std::string_view name = "switchboard_admin=";
            if (part.substr(0, name.size()) == name) return std::string(part.substr(name.size()));
        }
    }
    return std::nullopt;
}

Access check_access(const AccessPolicy& policy, const Request& request) {
    if (policy.tokens.empty()) return is_loopback(request.remote) ? Access::Allowed : Access::NotLoopback;
    auto token = presented_token(request);
    if (!token || token->empty()) return Access::NoToken;
    bool ok = false;
    for (const auto& t : policy.tokens) ok |= !t.empty() && same_token(*token, t);
    return ok ? Access::Allowed : Access::WrongToken;
}

bool require_access(const AccessPolicy& policy, const Request& request, Response& response) {
    switch (check_access(policy, request)) {
    case Access::Allowed: return true;
    case Access::NotLoopback:
        response.respond(403, "application/json",
                         "{\"error\":\"forbidden: this page is served to loopback clients only "
                         "until admin tokens are configured\"}");
        return false;
    case Access::NoToken:
        response.headers.emplace_back("WWW-Authenticate", "Bearer");
        response.respond(401, "application/json",
                         "{\"error\":\"unauthorised: give an admin token in 'Authorization: Bearer "
                         "TOKEN' or the cookie switchboard_admin\"}");
        return false;
    case Access::WrongToken:
        response.headers.emplace_back("WWW-Authenticate", "Bearer error=\"invalid_token\"");
        response.respond(401, "application/json", "{\"error\":\"unauthorised: the admin token is not valid\"}");
        return false;
    }
    return false;
}

} // namespace switchboard::http
