// http: POSTs each delivered (already minimised) record as JSON to a case
// system, with an Idempotency-Key (the record id, the same on every retry),
// a bearer token or an HMAC-SHA256 signature, TLS verified by default; reads
// the case reference from the answer and hands it to the host as the
// delivery's receipt. Optional erase hook: a request to `erase_url`.
//
// Outcomes (see the README): 2xx delivered; 408, 425, 429, 5xx, network and
// TLS errors SB_ERR_TRANSIENT (the core retries with backoff and jitter;
// Retry-After is honoured by refusing calls before it without a request);
// any other answer SB_ERR_PERMANENT (dead letter). Log lines and errors hold
// ids, statuses and counts, never the payload or the answer body.
#include "http_client.hpp"

#include <switchboard/plugin.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace {

constexpr std::size_t kMaxReference = 128;

// A case reference as stored and logged: printable ASCII, bounded.
bool usable_reference(std::string_view r) {
    if (r.empty() || r.size() > kMaxReference) return false;
    for (char ch : r)
        if (static_cast<unsigned char>(ch) < 0x21 || static_cast<unsigned char>(ch) > 0x7e) return false;
    return true;
}

std::string state_key(std::string_view record_id) { return "ref:" + std::string(record_id); }

class HttpDestination : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "http";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "POSTs minimised records as JSON to a case system; stores the case reference it returns";
        i.kind = SB_KIND_DESTINATION;
        i.capabilities = SB_CAP_ASYNC_ACK;
        i.config = {
            sb::Field::string("url").required().describe(
                "Where each record is POSTed (https://...)"),
            sb::Field::boolean("allow_http").fallback("false").describe(
                "Allow an http:// url or erase_url (plaintext: loopback adapters and tests only)"),
            sb::Field::string("case_reference_field").describe(
                "Path of the case reference in the JSON answer, e.g. \"reference\" or \"data.case.id\""),
            sb::Field::boolean("require_case_reference").fallback("false").describe(
                "Treat a 2xx answer without a readable case reference as a failure to retry"),
            sb::Field::string("erase_url").describe(
                "Erase hook: URL template with {record_id} and/or {case_reference}; unset: erase unsupported"),
            sb::Field::string("erase_method").choices({"DELETE", "POST"}).fallback("\"DELETE\"").describe(
                "HTTP method of the erase request"),
        };
        for (auto& f : sbhttp::common_fields()) i.config.push_back(std::move(f));
        return i;
    }

    explicit HttpDestination(sb::Host host)
        : sb::Plugin(host), common_(sbhttp::read_common(host, "http")),
          url_(host.string("url")), allow_http_(host.boolean("allow_http")),
          reference_field_(host.string_opt("case_reference_field").value_or("")),
          require_reference_(host.boolean("require_case_reference")),
          erase_url_(host.string_opt("erase_url").value_or("")),
          erase_method_(host.string("erase_method")), gate_(common_.retry_after_max_ms) {
        check_url("url", url_);
        if (require_reference_ && reference_field_.empty())
            throw sb::Error(SB_ERR_INVALID,
                            "config key 'require_case_reference' needs 'case_reference_field'");
        if (!erase_url_.empty()) {
            std::string rest = erase_url_;
            for (const char* p : {"{record_id}", "{case_reference}"})
                for (std::size_t at; (at = rest.find(p)) != std::string::npos;) rest.erase(at, std::string(p).size());
            if (rest.find('{') != std::string::npos || rest.find('}') != std::string::npos)
                throw sb::Error(SB_ERR_INVALID, "config key 'erase_url': the only placeholders are "
                                                "{record_id} and {case_reference}");
            uses_reference_ = erase_url_.find("{case_reference}") != std::string::npos;
            if (uses_reference_ && reference_field_.empty())
                throw sb::Error(SB_ERR_INVALID, "config key 'erase_url' uses {case_reference}: set "
                                                "'case_reference_field' too");
            check_url("erase_url", expand(erase_url_, "rec-1", "REF-1"));
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
        if (common_.auth.kind == sbhttp::Auth::None)
            host().warn("auth = \"none\": requests carry no credentials");
        if (url_.rfind("http://", 0) == 0 || erase_url_.rfind("http://", 0) == 0)
            host().warn("plaintext http:// allowed by allow_http: records cross the network unencrypted");
        host().info(std::string("posting to the case system") +
                    (reference_field_.empty() ? "" : "; case reference from '" + reference_field_ + "'") +
                    (erase_url_.empty() ? "; erase unsupported (no erase_url)" : "; erase by " + erase_method_));
    }

    sb::Status deliver(const sb::Delivery& d) {
        const std::string where = "seq " + std::to_string(d.sequence) + " record " + std::string(d.record_id);
        if (std::int64_t wait = gate_.remaining(host().now_ms())) {
            host().count("deferred_retry_after");
            throw sb::Error(SB_ERR_TRANSIENT, where + ": the case system asked to wait (Retry-After); " +
                                                  std::to_string(wait) + "ms left, no request sent");
        }
        sbhttp::Request req;
        req.method = "POST";
        req.url = url_;
        req.content_type = "application/json";
        req.body = payload(d);
        req.headers.emplace_back("Idempotency-Key", std::string(d.record_id));
        req.headers.emplace_back("X-Switchboard-Sequence", std::to_string(d.sequence));
        req.headers.emplace_back("X-Switchboard-Attempt", std::to_string(d.attempt));
        sbhttp::authenticate(common_.auth, req, host().now_ms());
        sbhttp::Reply reply = client_->send(req);
        sb::Status st = sbhttp::classify(reply);
        if (st != SB_OK) {
            fail(reply, st);
            throw sb::Error(st, where + ": " + sbhttp::describe(reply));
        }
        gate_.clear();
        host().count("delivered");
        if (reference_field_.empty()) return SB_OK;

        std::string why;
        std::optional<std::string> ref = reference(reply, why);
        if (!ref) {
            host().count("reference_missing");
            if (require_reference_)
                throw sb::Error(SB_ERR_TRANSIENT, where + ": HTTP " + std::to_string(reply.status) +
                                                      " without a case reference (" + why + ")");
            host().warn(where + " delivered (HTTP " + std::to_string(reply.status) +
                        ") but no case reference stored: " + why);
            return SB_OK;
        }
        if (uses_reference_ && host().set_state(state_key(d.record_id).c_str(), *ref) != SB_OK)
            throw sb::Error(SB_ERR_TRANSIENT, where + ": case reference could not be kept for erasure");
        if (host().log_enabled(SB_LOG_DEBUG))
            host().debug(where + " delivered (HTTP " + std::to_string(reply.status) + "), case reference " + *ref);
        // The receipt travels with the completion: synchronous here, so the
        // host finds it as soon as deliver returns.
        host().complete(d.id, SB_OK, ref->c_str());
        return SB_PENDING;
    }

    sb::Status erase(const sb::EraseRequest& r) {
        const std::string where = "erase of record " + std::string(r.record_id);
        if (erase_url_.empty())
            throw sb::Error(SB_ERR_UNSUPPORTED, where + ": no erase_url configured; the department "
                                                        "deletes by its own retention rule");
        std::string ref;
        if (uses_reference_) {
            auto stored = host().state(state_key(r.record_id).c_str());
            if (!stored) {
                host().count("erase_not_found");
                throw sb::Error(SB_ERR_NOT_FOUND, where + ": no case reference stored (never delivered "
                                                          "or already erased)");
            }
            ref = *stored;
        }
        if (std::int64_t wait = gate_.remaining(host().now_ms()))
            throw sb::Error(SB_ERR_TRANSIENT, where + ": the case system asked to wait (Retry-After); " +
                                                  std::to_string(wait) + "ms left, no request sent");
        sbhttp::Request req;
        req.method = erase_method_;
        req.url = expand(erase_url_, r.record_id, ref);
        req.content_type = "application/json";
        req.body = "{\"record_id\":" + sb::json_quote(r.record_id) + ",\"reason\":\"" +
                   (r.reason == SB_ERASE_REQUEST ? "request" : "retention") + "\"}";
        req.headers.emplace_back("Idempotency-Key", "erase-" + std::string(r.record_id));
        sbhttp::authenticate(common_.auth, req, host().now_ms());
        sbhttp::Reply reply = client_->send(req);
        sb::Status st = sbhttp::classify(reply);
        if (reply.status == 404 || reply.status == 410) st = SB_ERR_NOT_FOUND;
        if (st == SB_OK || st == SB_ERR_NOT_FOUND) {
            if (uses_reference_) host().clear_state(state_key(r.record_id).c_str());
            host().count(st == SB_OK ? "erased" : "erase_not_found");
            if (st == SB_OK) {
                host().info(where + ": confirmed (HTTP " + std::to_string(reply.status) + ")");
                return SB_OK;
            }
            throw sb::Error(SB_ERR_NOT_FOUND, where + ": the case system holds no such case (HTTP " +
                                                  std::to_string(reply.status) + ")");
        }
        fail(reply, st);
        throw sb::Error(st, where + ": " + sbhttp::describe(reply));
    }

private:
    void check_url(const char* key, const std::string& url) const {
        if (auto why = sbhttp::url_problem(url))
            throw sb::Error(SB_ERR_INVALID, std::string("config key '") + key + "': " + *why);
        if (url.rfind("http://", 0) == 0 && !allow_http_)
            throw sb::Error(SB_ERR_INVALID, std::string("config key '") + key +
                                                "': plaintext http:// needs allow_http = true");
    }

    static std::string expand(const std::string& tmpl, std::string_view record_id, std::string_view ref) {
        std::string out;
        for (std::size_t k = 0; k < tmpl.size();) {
            if (tmpl.compare(k, 11, "{record_id}") == 0) {
                out += sbhttp::percent_encode(record_id);
                k += 11;
            } else if (tmpl.compare(k, 16, "{case_reference}") == 0) {
                out += sbhttp::percent_encode(ref);
                k += 16;
            } else {
                out += tmpl[k++];
            }
        }
        return out;
    }

    // The body: the same bytes on every retry of a record.
    static std::string payload(const sb::Delivery& d) {
        std::string_view record = d.record.json();
        std::string out;
        out.reserve(record.size() + d.record_id.size() + 160);
        out += "{\"record_id\":";
        out += sb::json_quote(d.record_id);
        out += ",\"sequence\":";
        out += std::to_string(d.sequence);
        out += ",\"purpose\":";
        out += sb::json_quote(d.purpose);
        out += ",\"profile\":";
        out += sb::json_quote(d.profile);
        out += ",\"profile_version\":";
        out += std::to_string(d.profile_version);
        out += ",\"record\":";
        out += record.empty() ? std::string_view("null") : record;
        out += "}";
        return out;
    }

    std::optional<std::string> reference(const sbhttp::Reply& reply, std::string& why) const {
        auto leaves = sbhttp::answer_leaves(reply, common_.client.max_response, why);
        if (!leaves) return std::nullopt;
        auto it = leaves->find(reference_field_);
        if (it == leaves->end() || it->second == "null") {
            why = "answer has no '" + reference_field_ + "'";
            return std::nullopt;
        }
        if (!usable_reference(it->second)) {
            why = "'" + reference_field_ + "' is not a usable reference (1 to 128 printable ASCII characters)";
            return std::nullopt;
        }
        return it->second;
    }

    void fail(const sbhttp::Reply& reply, sb::Status st) {
        if (reply.timed_out) host().count("timeouts");
        if (reply.status == 0) host().count("network_errors");
        host().count(st == SB_ERR_TRANSIENT ? "transient_failures" : "permanent_failures");
        if (st == SB_ERR_TRANSIENT) gate_.note(reply, host().now_ms());
    }

    const sbhttp::CommonConfig common_;
    const std::string url_;
    const bool allow_http_;
    const std::string reference_field_;
    const bool require_reference_;
    const std::string erase_url_;
    const std::string erase_method_;
    bool uses_reference_ = false;
    std::unique_ptr<sbhttp::Client> client_;
    // deliver and erase never run at the same time: no lock needed.
    sbhttp::RetryGate gate_;
};

} // namespace

SB_PLUGIN(HttpDestination)
