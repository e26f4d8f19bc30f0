// open311: creates one service request per delivered record through the
// Open311 GeoReport v2 interface (POST {endpoint}/requests.json,
// application/x-www-form-urlencoded), the parameters mapped from record
// fields (or literals) in config; stores the service_request_id (or the
// token of a deferred request) as the delivery's receipt.
//
// The HTTP side is shared with the http destination (../common): TLS
// verified by default, bearer/HMAC authentication if the adapter wants it,
// 408/425/429/5xx and network errors SB_ERR_TRANSIENT (the core retries),
// other answers SB_ERR_PERMANENT with the GeoReport error list's codes and
// (scrubbed) descriptions. No erase hook: GeoReport v2 has no way to delete
// a request (see the README).
#include "http_client.hpp"

#include <switchboard/plugin.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

constexpr std::size_t kMaxDescription = 4000; // GeoReport v2: "up to 4,000 characters"
constexpr std::size_t kMaxReceipt = 128;

// Where a parameter's value comes from: a literal or a record field path.
struct Source {
    bool literal = false;
    std::string text; // the literal, or the path
};

bool is_path(std::string_view p) {
    if (p.empty() || p.size() > 512) return false;
    for (char c : p)
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.' || c == '[' || c == ']' || c == '*'))
            return false;
    return true;
}

Source parse_source(const std::string& key, const std::string& value) {
    if (value.rfind("literal:", 0) == 0) return {true, value.substr(8)};
    if (!is_path(value))
        throw sb::Error(SB_ERR_INVALID, "config key '" + key +
                                            "': expected \"literal:TEXT\" or a field path such as citizen.name");
    return {false, value};
}

// Cuts UTF-8 text to at most `max` characters.
std::string cut_chars(const std::string& s, std::size_t max, bool& cut) {
    std::size_t chars = 0, k = 0;
    while (k < s.size()) {
        if (chars == max) {
            cut = true;
            return s.substr(0, k);
        }
        auto c = static_cast<unsigned char>(s[k]);
        k += c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        ++chars;
    }
    cut = false;
    return s;
}

bool usable_receipt(std::string_view r) {
    if (r.empty() || r.size() > kMaxReceipt) return false;
    for (char ch : r)
        if (static_cast<unsigned char>(ch) < 0x21 || static_cast<unsigned char>(ch) > 0x7e) return false;
    return true;
}

class Open311Destination : public sb::Plugin {
public:
    // GeoReport v2 POST parameters that map one value each, in the order
    // they are written.
    static constexpr const char* kParams[] = {"lat", "long", "address_string", "address_id", "email",
                                              "first_name", "last_name", "phone", "description"};

    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "open311";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "Creates Open311 GeoReport v2 service requests; stores the service_request_id";
        i.kind = SB_KIND_DESTINATION;
        i.capabilities = SB_CAP_ASYNC_ACK;
        auto mapping = [](const char* key, const char* what) {
            return sb::Field::string(key).describe(std::string(what) +
                                                   ": \"literal:TEXT\" or a record field path");
        };
        i.config = {
            sb::Field::string("endpoint").required().describe(
                "GeoReport v2 endpoint; requests go to {endpoint}/requests.json"),
            sb::Field::boolean("allow_http").fallback("false").describe(
                "Allow an http:// endpoint (plaintext: loopback adapters and tests only)"),
            sb::Field::string("api_key").secret().describe("GeoReport api_key parameter, if the endpoint needs one"),
            sb::Field::string("jurisdiction_id").describe("GeoReport jurisdiction_id parameter, if needed"),
            mapping("service_code", "service_code (required unless service_code_by_purpose covers every route)"),
            sb::Field::string("service_code_by_purpose").multi().describe(
                "Per-route service codes, \"PURPOSE=CODE\"; the route's purpose picks one before service_code"),
            mapping("lat", "lat (WGS84)"),
            mapping("long", "long (WGS84)"),
            mapping("address_string", "address_string"),
            mapping("address_id", "address_id"),
            mapping("email", "email"),
            mapping("first_name", "first_name"),
            mapping("last_name", "last_name"),
            mapping("phone", "phone"),
            mapping("description", "description (cut to 4000 characters)"),
            sb::Field::string("attributes").multi().describe(
                "attribute[CODE] parameters, \"CODE=literal:TEXT\" or \"CODE=path\" (path[*]: a multivaluelist)"),
        };
        for (auto& f : sbhttp::common_fields()) i.config.push_back(std::move(f));
        return i;
    }

    explicit Open311Destination(sb::Host host)
        : sb::Plugin(host), common_(sbhttp::read_common(host, "open311")),
          endpoint_(host.string("endpoint")), gate_(common_.retry_after_max_ms) {
        if (auto why = sbhttp::url_problem(endpoint_))
            throw sb::Error(SB_ERR_INVALID, "config key 'endpoint': " + *why);
        if (endpoint_.find('?') != std::string::npos)
            throw sb::Error(SB_ERR_INVALID, "config key 'endpoint': no query allowed");
        if (endpoint_.rfind("http://", 0) == 0 && !host.boolean("allow_http"))
            throw sb::Error(SB_ERR_INVALID, "config key 'endpoint': plaintext http:// needs allow_http = true");
        while (!endpoint_.empty() && endpoint_.back() == '/') endpoint_.pop_back();
        api_key_ = host.string_opt("api_key").value_or("");
        jurisdiction_ = host.string_opt("jurisdiction_id").value_or("");
        if (auto v = host.string_opt("service_code")) service_code_ = parse_source("service_code", *v);
        auto by_purpose = host.list("service_code_by_purpose");
        for (std::size_t k = 0; k < by_purpose.size(); ++k) {
            const std::string& e = by_purpose[k];
            std::size_t eq = e.find('=');
            if (eq == std::string::npos || eq == 0 || eq + 1 == e.size())
                throw sb::Error(SB_ERR_INVALID, "config key 'service_code_by_purpose' entry " +
                                                    std::to_string(k + 1) + ": expected PURPOSE=CODE");
            if (!by_purpose_.emplace(e.substr(0, eq), e.substr(eq + 1)).second)
                throw sb::Error(SB_ERR_INVALID, "config key 'service_code_by_purpose' entry " +
                                                    std::to_string(k + 1) + ": purpose listed twice");
        }
        if (!service_code_ && by_purpose_.empty())
            throw sb::Error(SB_ERR_INVALID,
                            "config key 'service_code' (or 'service_code_by_purpose') is required");
        for (const char* p : kParams)
            if (auto v = host.string_opt(p)) params_.emplace_back(p, parse_source(p, *v));
        auto attrs = host.list("attributes");
        for (std::size_t k = 0; k < attrs.size(); ++k) {
            const std::string& e = attrs[k];
            std::size_t eq = e.find('=');
            std::string code = eq == std::string::npos ? "" : e.substr(0, eq);
            bool ok = !code.empty() && code.size() <= 64;
            for (char c : code)
                ok = ok && ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                            c == '_' || c == '-' || c == '.');
            if (!ok)
                throw sb::Error(SB_ERR_INVALID, "config key 'attributes' entry " + std::to_string(k + 1) +
                                                    ": expected CODE=literal:TEXT or CODE=path, CODE "
                                                    "[A-Za-z0-9_.-]{1,64}");
            attributes_.emplace_back(code, parse_source("attributes entry " + std::to_string(k + 1), e.substr(eq + 1)));
        }
        try {
            client_ = std::make_unique<sbhttp::Client>(common_.client);
        } catch (const std::invalid_argument& e) {
            throw sb::Error(SB_ERR_INVALID, std::string("config key 'ca_file': ") + e.what());
        }
    }

    void start() {
        if (!common_.client.tls.verify)
            host().warn("tls_verify = false: the server's certificate is NOT checked (tests only)");
        if (endpoint_.rfind("http://", 0) == 0)
            host().warn("plaintext http:// allowed by allow_http: records cross the network unencrypted");
        host().info("creating GeoReport v2 service requests; " + std::to_string(params_.size()) +
                    " parameter(s) and " + std::to_string(attributes_.size()) + " attribute(s) mapped");
    }

    sb::Status deliver(const sb::Delivery& d) {
        const std::string where = "seq " + std::to_string(d.sequence) + " record " + std::string(d.record_id);
        if (std::int64_t wait = gate_.remaining(host().now_ms())) {
            host().count("deferred_retry_after");
            throw sb::Error(SB_ERR_TRANSIENT, where + ": the endpoint asked to wait (Retry-After); " +
                                                  std::to_string(wait) + "ms left, no request sent");
        }
        sbhttp::Request req;
        req.method = "POST";
        req.url = endpoint_ + "/requests.json";
        req.content_type = "application/x-www-form-urlencoded";
        req.body = form(d, where);
        req.headers.emplace_back("Idempotency-Key", std::string(d.record_id));
        sbhttp::authenticate(common_.auth, req, host().now_ms());
        sbhttp::Reply reply = client_->send(req);
        sb::Status st = sbhttp::classify(reply);
        if (st != SB_OK) {
            if (reply.timed_out) host().count("timeouts");
            if (reply.status == 0) host().count("network_errors");
            host().count(st == SB_ERR_TRANSIENT ? "transient_failures" : "permanent_failures");
            if (st == SB_ERR_TRANSIENT) gate_.note(reply, host().now_ms());
            throw sb::Error(st, where + ": " + sbhttp::describe(reply) + errors(reply));
        }
        gate_.clear();
        host().count("delivered");
        std::string why;
        std::optional<std::string> receipt = read_receipt(reply, why);
        if (!receipt) {
            // The request was accepted: sending it again would make a
            // duplicate, so it counts as delivered without a receipt.
            host().count("receipt_missing");
            host().warn(where + " accepted (HTTP " + std::to_string(reply.status) +
                        ") but no service_request_id or token stored: " + why);
            return SB_OK;
        }
        if (host().log_enabled(SB_LOG_DEBUG))
            host().debug(where + " accepted (HTTP " + std::to_string(reply.status) + "), " + *receipt);
        host().complete(d.id, SB_OK, receipt->c_str());
        return SB_PENDING;
    }

private:
    std::optional<std::string> resolve(const Source& s, const sb::RecordView& r) const {
        if (s.literal) return s.text;
        return sbhttp::field_text(r, s.text);
    }

    // Values of a path ending in [*]: every element, in index order.
    std::vector<std::string> resolve_all(const Source& s, const sb::RecordView& r) const {
        std::vector<std::string> out;
        if (s.literal || s.text.size() < 3 || s.text.compare(s.text.size() - 3, 3, "[*]") != 0) {
            if (auto v = resolve(s, r)) out.push_back(*v);
            return out;
        }
        std::string base = s.text.substr(0, s.text.size() - 3);
        for (std::uint32_t k = 0; k < 65536; ++k) {
            auto v = sbhttp::field_text(r, base + "[" + std::to_string(k) + "]");
            if (!v) break;
            out.push_back(*v);
        }
        return out;
    }

    // The form body, fields in GeoReport v2's order. Throws SB_ERR_PERMANENT
    // when the record cannot make a valid request.
    std::string form(const sb::Delivery& d, const std::string& where) {
        std::string out;
        auto add = [&](std::string_view key, std::string_view value) {
            if (!out.empty()) out += '&';
            out += sbhttp::percent_encode(key);
            out += '=';
            out += sbhttp::percent_encode(value);
        };
        if (!jurisdiction_.empty()) add("jurisdiction_id", jurisdiction_);
        if (!api_key_.empty()) add("api_key", api_key_);
        std::optional<std::string> code;
        if (auto it = by_purpose_.find(std::string(d.purpose)); it != by_purpose_.end())
            code = it->second;
        else if (service_code_)
            code = resolve(*service_code_, d.record);
        if (!code || code->empty()) {
            host().count("unmappable");
            throw sb::Error(SB_ERR_PERMANENT, where + ": no service_code (purpose not in "
                                                      "service_code_by_purpose and the mapped field is empty)");
        }
        add("service_code", *code);
        bool located = false, lat = false, lon = false;
        for (const auto& [name, src] : params_) {
            auto v = resolve(src, d.record);
            if (!v || v->empty()) continue;
            std::string value = *v;
            if (name == "description") {
                bool cut = false;
                value = cut_chars(value, kMaxDescription, cut);
                if (cut) host().count("descriptions_cut");
            }
            std::string_view n = name;
            if (n == "lat") lat = true;
            if (n == "long") lon = true;
            if (n == "address_string" || n == "address_id") located = true;
            add(name, value);
        }
        if (!located && !(lat && lon)) {
            host().count("unmappable");
            throw sb::Error(SB_ERR_PERMANENT, where + ": no location (GeoReport v2 needs lat and long, "
                                                      "address_string or address_id; the mapped fields are empty)");
        }
        for (const auto& [attr, src] : attributes_) {
            auto values = resolve_all(src, d.record);
            bool list = !src.literal && src.text.size() >= 3 &&
                        src.text.compare(src.text.size() - 3, 3, "[*]") == 0;
            for (const auto& v : values) add("attribute[" + attr + (list ? "][]" : "]"), v);
        }
        return out;
    }

    std::optional<std::string> read_receipt(const sbhttp::Reply& reply, std::string& why) const {
        auto leaves = sbhttp::answer_leaves(reply, common_.client.max_response, why);
        if (!leaves) return std::nullopt;
        // GeoReport v2 answers a list with one entry; a bare object is
        // accepted too (some adapters send one).
        for (const char* prefix : {"[0].", ""}) {
            auto id = leaves->find(std::string(prefix) + "service_request_id");
            if (id != leaves->end() && id->second != "null") {
                if (!usable_receipt(id->second)) break;
                return id->second;
            }
            auto token = leaves->find(std::string(prefix) + "token");
            if (token != leaves->end() && token->second != "null") {
                if (!usable_receipt(token->second)) break;
                return "token:" + token->second;
            }
        }
        why = "answer has no usable service_request_id or token (1 to 128 printable ASCII characters)";
        return std::nullopt;
    }

    // " (GeoReport errors: 400 service_code not found; ...)" from an error
    // answer, descriptions scrubbed of digits and e-mail addresses.
    static std::string errors(const sbhttp::Reply& reply) {
        if (reply.status == 0 || (reply.status >= 200 && reply.status < 300)) return {};
        std::string error;
        auto leaves = sbhttp::json_leaves(reply.body, error);
        if (!leaves) return reply.body.empty() ? "" : " (answer is not a GeoReport error list)";
        std::string out;
        for (std::size_t k = 0; k < 8; ++k) {
            std::string at = "[" + std::to_string(k) + "].";
            auto code = leaves->find(at + "code");
            auto desc = leaves->find(at + "description");
            if (code == leaves->end() && desc == leaves->end()) break;
            if (!out.empty()) out += "; ";
            if (code != leaves->end()) {
                const std::string& c = code->second;
                bool number = !c.empty() && c.size() <= 6 && c.find_first_not_of("0123456789") == std::string::npos;
                out += number ? c : sbhttp::scrub(c, 32);
            }
            if (desc != leaves->end()) out += (code != leaves->end() ? " " : "") + sbhttp::scrub(desc->second);
        }
        if (out.empty()) return " (answer is not a GeoReport error list)";
        return " (GeoReport errors: " + out + ")";
    }

    const sbhttp::CommonConfig common_;
    std::string endpoint_;
    std::string api_key_;
    std::string jurisdiction_;
    std::optional<Source> service_code_;
    std::map<std::string, std::string> by_purpose_;
    std::vector<std::pair<std::string, Source>> params_;
    std::vector<std::pair<std::string, Source>> attributes_;
    std::unique_ptr<sbhttp::Client> client_;
    sbhttp::RetryGate gate_; // the queue thread only
};

} // namespace

SB_PLUGIN(Open311Destination)
