#include "admin/admin_api.hpp"

#include "audit/audit_log.hpp"

#include <switchboard/detail/record_data.hpp>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace switchboard::admin {

namespace {

constexpr const char* kOwner = "admin";

void digest_of(std::string_view text, unsigned char out[32]) {
    SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), out);
}

bool valid_method(const std::string& m) {
    return !m.empty() && m.size() <= 16 &&
           std::all_of(m.begin(), m.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

// Relative endpoint paths: lowercase segments of [a-z0-9_-], optionally "/*" last.
bool valid_relative(const std::string& p) {
    if (p.empty() || p.front() == '/' || p.back() == '/') return false;
    std::string body = p;
    if (body.size() >= 2 && body.compare(body.size() - 2, 2, "/*") == 0) body.resize(body.size() - 2);
    if (body.empty() || body.find("//") != std::string::npos) return false;
    return std::all_of(body.begin(), body.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '/';
    });
}

} // namespace

void append_call(audit::AuditLog& log, std::int64_t ts_ms, const CallNote& note) {
    std::string detail;
    audit::append_attr(detail, "actor", note.actor);
    audit::append_attr(detail, "method", note.method);
    audit::append_attr(detail, "endpoint", note.endpoint);
    audit::append_attr(detail, "status", std::to_string(note.status));
    log.append(ts_ms, "admin", "", detail);
}

std::string json_string(const std::string& text) {
    std::string out;
    sb::detail::append_json_string(out, text);
    return out;
}

std::string query_param(const std::string& query, const std::string& key) {
    std::size_t pos = 0;
    while (pos <= query.size()) {
        std::size_t end = query.find('&', pos);
        if (end == std::string::npos) end = query.size();
        std::string_view part(query.data() + pos, end - pos);
        if (part.substr(0, key.size() + 1) == key + "=") return std::string(part.substr(key.size() + 1));
        pos = end + 1;
    }
    return "";
}

void respond_error(http::Response& r, int status, const std::string& message) {
    r.respond(status, "application/json", "{\"error\":" + json_string(message) + "}");
}

AdminApi::AdminApi(http::Server& server, std::vector<Token> tokens, AuditFn audit)
    : server_(server), audit_(std::move(audit)) {
    for (const auto& t : tokens) {
        if (t.secret.size() < kMinTokenLength)
            throw std::invalid_argument("admin token '" + t.name + "' is shorter than " +
                                        std::to_string(kMinTokenLength) +
                                        " characters; make one with `openssl rand -hex 32`");
        for (const auto& k : tokens_)
            if (k.name == t.name) throw std::invalid_argument("two admin tokens are named '" + t.name + "'");
        Known k;
        k.name = t.name;
        k.read_only = t.read_only;
        digest_of(t.secret, k.digest);
        tokens_.push_back(std::move(k));
    }
}

AdminApi::~AdminApi() { stop(); }

void AdminApi::start() {
    std::lock_guard lock(mutex_);
    if (started_) return;
    if (!server_.add_route("*", kPrefix, [this](const http::Request& q, http::Response& r) { handle(q, r); },
                           kOwner))
        throw std::runtime_error(std::string("cannot register the admin API at ") + kPrefix +
                                 " (the path is taken)");
    started_ = true;
}

void AdminApi::stop() {
    {
        std::lock_guard lock(mutex_);
        if (!started_) return;
        started_ = false;
    }
    server_.remove_routes(kOwner);
}

bool AdminApi::add(const std::string& method, const std::string& path, Handler handler) {
    if (!valid_method(method) || !valid_relative(path) || !handler) return false;
    std::lock_guard lock(mutex_);
    auto& methods = routes_[std::string(kPrefix) + "/" + path];
    if (methods.count(method)) return false;
    auto e = std::make_shared<Entry>();
    e->handler = std::move(handler);
    e->subtree = path.size() >= 2 && path.compare(path.size() - 2, 2, "/*") == 0;
    methods[method] = std::move(e);
    return true;
}

std::optional<std::string> AdminApi::authenticate(const http::Request& request) const {
    const std::string* h = request.header("authorization");
    if (!h || h->size() < 7) return std::nullopt;
    std::string scheme = h->substr(0, 7);
    std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                   [](char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c); });
    if (scheme != "bearer ") return std::nullopt;
    std::string_view presented(*h);
    presented.remove_prefix(7);
    while (!presented.empty() && presented.front() == ' ') presented.remove_prefix(1);
    while (!presented.empty() && presented.back() == ' ') presented.remove_suffix(1);
    unsigned char digest[32];
    digest_of(presented, digest);
    // Every token is compared, whatever matched, so the time taken does not
    // say which (or whether one) did.
    const Known* match = nullptr;
    for (const auto& k : tokens_)
        if (CRYPTO_memcmp(digest, k.digest, sizeof digest) == 0) match = &k;
    if (!match || presented.empty()) return std::nullopt;
    return match->name;
}

void AdminApi::handle(const http::Request& request, http::Response& response) {
    CallNote note;
    note.actor = "-";
    note.method = valid_method(request.method) ? request.method : "OTHER";
    note.endpoint = kPrefix;

    // Which endpoint: the exact path, else the longest "/*" parent.
    std::shared_ptr<const Entry> entry;
    std::string rest;
    bool path_known = false;
    std::string allow;
    {
        std::lock_guard lock(mutex_);
        auto found = routes_.end();
        if (auto it = routes_.find(request.path); it != routes_.end()) {
            found = it;
        } else {
            std::string parent = request.path;
            while (found == routes_.end()) {
                auto slash = parent.rfind('/');
                if (slash == std::string::npos || slash < std::string(kPrefix).size()) break;
                parent.resize(slash);
                if (auto it = routes_.find(parent + "/*"); it != routes_.end()) {
                    found = it;
                    rest = request.path.substr(parent.size() + 1);
                }
            }
        }
        if (found != routes_.end()) {
            path_known = true;
            note.endpoint = found->first;
            std::string method = request.method == "HEAD" ? "GET" : request.method;
            if (auto m = found->second.find(method); m != found->second.end()) entry = m->second;
            for (const auto& [name, e] : found->second) allow += (allow.empty() ? "" : ", ") + name;
        }
    }

    auto finish = [&] {
        note.status = response.status;
        if (audit_) {
            try {
                audit_(note);
            } catch (...) {
                // The answer stands; the journal logs its own failures.
            }
        }
    };

    auto caller = authenticate(request);
    if (!caller) {
        response.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"switchboard-admin\"");
        respond_error(response, 401,
                      tokens_.empty() ? "the admin API has no tokens: add [[admin.token]] to the config"
                                      : "a valid admin token is required (Authorization: Bearer TOKEN)");
        finish();
        return;
    }
    note.actor = *caller;
    const bool read_only = std::any_of(tokens_.begin(), tokens_.end(),
                                       [&](const Known& k) { return k.name == *caller && k.read_only; });
    if (!path_known) {
        respond_error(response, 404, "no such admin endpoint; see docs/running.md");
    } else if (!entry) {
        response.headers.emplace_back("Allow", allow);
        respond_error(response, 405, "method not allowed here; allowed: " + allow);
    } else if (read_only && request.method != "GET" && request.method != "HEAD") {
        respond_error(response, 403, "token '" + *caller + "' is read-only");
    } else {
        Call call{request, *caller, note.endpoint, rest};
        try {
            entry->handler(call, response);
            if (!response.responded) respond_error(response, 500, "internal error");
        } catch (const std::exception&) {
            // Not logged: handlers may read citizen data and messages may quote it.
            respond_error(response, 500, "internal error");
        }
    }
    finish();
}

} // namespace switchboard::admin
