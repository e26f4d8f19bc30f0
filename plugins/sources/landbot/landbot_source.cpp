// landbot: web chat and WhatsApp conversations from Landbot MessageHooks.
//
// Landbot POSTs one message per request (Authorization: Token …) and retries
// anything but a 2xx at least six times. The plugin checks the token in
// constant time, reads the message, redacts card data and NINOs, and adds it
// to its customer's open conversation, which it keeps in the host's durable
// per-instance state ("conv:<customer id>") — committed before the 2xx, so
// an acknowledged message survives a kill. When the conversation has been
// quiet for quiet_period (or Landbot archives it, or it hits max_turns,
// max_conversation or max_duration) it becomes ONE record, emitted together
// with the state change in one durable commit (emit_batch), so a crash
// neither loses nor repeats it.
//
// At expiry the erase hook deletes the customer at Landbot
// (DELETE /v1/customers/{id}/, then GET must answer 404).
//
// Logs carry counts, reasons and byte sizes, never message content, names,
// numbers or customer ids.
#include "conversation.hpp"
#include "delivery.hpp"
#include "landbot_api.hpp"
#include "redact.hpp"

#include <switchboard/plugin.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

using landbot::Conversation;
using landbot::Custom;
using landbot::Message;
using landbot::Turn;

constexpr std::int64_t kTickMs = 1000;            // how often the close timer looks
constexpr std::int64_t kArchiveGraceMs = 2000;    // out-of-order stragglers after an archive
constexpr std::size_t kQuarantineHead = 16u << 10; // bytes kept of an oversized body
constexpr std::size_t kMaxRecent = 2000;          // dedupe keys kept per customer
constexpr std::size_t kMaxTraces = 100000;        // delivery ids remembered in memory
constexpr std::size_t kMaxTraceLength = 200;

const char* const kDefaultFieldMap =
    R"(["postcode=citizen.address.postcode:contact.postcode", )"
    R"("uprn=citizen.address.uprn:reference.uprn", )"
    R"("council_tax_account=refs.council_tax_account:reference.account", )"
    R"("hb_claim_ref=refs.hb_claim:reference.claim"])";

// Constant-time comparison: the time taken depends on the lengths only.
bool same_secret(std::string_view a, std::string_view b) {
    std::size_t n = std::max(a.size(), b.size());
    unsigned diff = a.size() == b.size() ? 0u : 1u;
    for (std::size_t i = 0; i < n; ++i) {
        unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
        unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
        diff |= static_cast<unsigned>(x ^ y);
    }
    return diff == 0;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// FNV-1a 64: a stable id for messages that carry no _raw.uuid (APIchat, sys
// events), computed over redacted content only.
std::string fnv_hex(std::string_view s) {
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ull;
    }
    static const char hex[] = "0123456789abcdef";
    std::string out(16, '0');
    for (int k = 15; k >= 0; --k, h >>= 4) out[static_cast<std::size_t>(k)] = hex[h & 15];
    return out;
}

// A field_map entry: custom field key -> record path and category.
struct FieldRule {
    std::string key, path, category;
};

bool valid_target_path(std::string_view p) {
    if (p.empty() || p.size() > 200 || p.front() == '.' || p.back() == '.') return false;
    for (std::size_t i = 0; i < p.size(); ++i) {
        char c = p[i];
        if (c == '.') {
            if (p[i + 1] == '.') return false;
        } else if (!sb::detail::is_key_char(c)) {
            return false;
        }
    }
    return true;
}

// Paths the plugin fills itself: a field_map entry may not write there.
bool reserved_target(std::string_view p) {
    for (std::string_view root : {"content", "vendor", "defects", "agent", "hints"})
        if (p == root || (p.size() > root.size() && p.substr(0, root.size()) == root &&
                          p[root.size()] == '.'))
            return true;
    for (std::string_view exact : {"citizen.name", "contact.phone", "contact.email", "identifiers.nino"})
        if (p == exact) return true;
    return false;
}

// One customer's conversation and its lock.
struct Slot {
    std::mutex m;
    bool gone = false; // its state key was deleted and it left the map
    Conversation c;
};

enum class Outcome { Accepted, Duplicate, Unavailable };

class LandbotSource : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "landbot";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "Web chat and WhatsApp conversations from Landbot message hooks";
        i.kind = SB_KIND_SOURCE;
        i.capabilities = SB_CAP_HTTP | SB_CAP_TIMERS;
        i.data_categories = {"identity.name",     "contact.phone",     "contact.email",
                             "contact.postcode",  "reference.uprn",    "reference.account",
                             "reference.claim",   "identifier.nino",   "classification.hint",
                             "content.free_text", "content.meta",      "staff.id",
                             "staff.name",        "vendor.id",         "operational.defect"};
        i.config = {
            sb::Field::string("token").required().secret().describe(
                "The message hook's token; Landbot sends it as 'Authorization: Token <token>'"),
            sb::Field::boolean("allow_apichat").fallback("false").describe(
                "Accept APIchat webhook deliveries, which carry no Authorization header"),
            sb::Field::duration("quiet_period").min(1000).fallback("\"30m\"").describe(
                "A conversation closes (and is emitted) after this long without a message"),
            sb::Field::duration("max_duration").min(1000).fallback("\"24h\"").describe(
                "A conversation open this long is closed and emitted even if still active"),
            sb::Field::integer("max_turns").range(1, 10000).fallback("200").describe(
                "A conversation reaching this many messages is closed and emitted at once"),
            sb::Field::size("max_conversation").range(4096, 16.0 * 1024 * 1024)
                .fallback("\"256KiB\"")
                .describe("A conversation whose stored form reaches this size is closed and "
                          "emitted at once"),
            sb::Field::size("max_message").range(1024, 16.0 * 1024 * 1024).fallback("\"64KiB\"")
                .describe("Larger deliveries are answered 200 and quarantined (a prefix), not read"),
            sb::Field::string("hint_fields").multi().fallback("[\"enquiry_topic\", \"topic\"]")
                .describe("Custom fields whose value becomes hints.topic (the first one present)"),
            sb::Field::string("field_map").multi().fallback(kDefaultFieldMap).describe(
                "\"custom_field=record.path:category\": custom fields copied into the record"),
            sb::Field::boolean("close_on_archive").fallback("true").describe(
                "Close a conversation as soon as Landbot reports the chat archived"),
            sb::Field::string("nino").choices({"redact", "identifier"}).fallback("\"redact\"")
                .describe("NINOs typed in chat: redact (text only) or identifier (also kept as "
                          "identifiers.nino)"),
            sb::Field::duration("dedupe_window").min(1000).fallback("\"1h\"").describe(
                "How long message and delivery ids are remembered after their conversation closed"),
            sb::Field::string("api_base").fallback("\"https://api.landbot.io/v1\"").describe(
                "Landbot Platform API base URL (for erasure)"),
            sb::Field::string("api_token").secret().describe(
                "Landbot agent token for the Platform API; without it the erase hook cannot "
                "delete the vendor's copy"),
            sb::Field::duration("api_timeout").range(100, 120000).fallback("\"10s\"").describe(
                "Connect, send and receive timeout of each API request"),
            sb::Field::integer("api_attempts").range(1, 10).fallback("3").describe(
                "API requests per erase call on 429, 5xx or network errors before the core "
                "retries the task later"),
            sb::Field::duration("api_max_wait").range(0, 300000).fallback("\"30s\"").describe(
                "Longest wait between two such requests (Retry-After or backoff); a longer "
                "Retry-After hands the task back to the core at once"),
        };
        return i;
    }

    explicit LandbotSource(sb::Host host)
        : sb::Plugin(host),
          token_(host.string("token")),
          allow_apichat_(host.boolean("allow_apichat")),
          quiet_ms_(host.duration_ms("quiet_period")),
          max_duration_ms_(host.duration_ms("max_duration")),
          max_turns_(static_cast<std::size_t>(host.integer("max_turns"))),
          max_conversation_(static_cast<std::size_t>(host.integer("max_conversation"))),
          max_message_(static_cast<std::size_t>(host.integer("max_message"))),
          hint_fields_(host.list("hint_fields")),
          close_on_archive_(host.boolean("close_on_archive")),
          nino_identifier_(host.string("nino") == "identifier"),
          dedupe_ms_(host.duration_ms("dedupe_window")),
          api_token_(host.string_opt("api_token").value_or("")),
          api_attempts_(static_cast<int>(host.integer("api_attempts"))),
          api_max_wait_ms_(host.duration_ms("api_max_wait")) {
        if (token_.empty()) throw sb::Error(SB_ERR_INVALID, "config key 'token' is empty");
        for (const auto& h : hint_fields_)
            if (!sb::detail::is_json_path_key(h))
                throw sb::Error(SB_ERR_INVALID,
                                "config key 'hint_fields': entries are custom field names "
                                "([A-Za-z0-9_-], as the JSON reader maps them)");
        auto entries = host.list("field_map");
        for (std::size_t k = 0; k < entries.size(); ++k) {
            std::string where = "config key 'field_map' entry " + std::to_string(k + 1) + ": ";
            std::string_view e = entries[k];
            std::size_t eq = e.find('='), colon = e.rfind(':');
            if (eq == std::string_view::npos || colon == std::string_view::npos || colon < eq)
                throw sb::Error(SB_ERR_INVALID, where + "expected custom_field=record.path:category");
            FieldRule r{std::string(trim(e.substr(0, eq))),
                        std::string(trim(e.substr(eq + 1, colon - eq - 1))),
                        std::string(trim(e.substr(colon + 1)))};
            if (!sb::detail::is_json_path_key(r.key))
                throw sb::Error(SB_ERR_INVALID, where + "the custom field name must be [A-Za-z0-9_-]+");
            if (!valid_target_path(r.path))
                throw sb::Error(SB_ERR_INVALID, where + "the record path must be dotted keys "
                                                        "([A-Za-z0-9_-] segments, no indexes)");
            if (reserved_target(r.path))
                throw sb::Error(SB_ERR_INVALID,
                                where + "the record path is one the plugin fills itself "
                                        "(content, vendor, defects, agent, hints, citizen.name, "
                                        "contact.phone, contact.email, identifiers.nino)");
            if (!sb::detail::is_category_name(r.category))
                throw sb::Error(SB_ERR_INVALID, where + "the category must be [a-z0-9_.]+");
            for (const auto& o : field_map_) {
                if (o.key == r.key)
                    throw sb::Error(SB_ERR_INVALID, where + "the custom field is mapped twice");
                if (o.path == r.path)
                    throw sb::Error(SB_ERR_INVALID, where + "the record path is mapped twice");
            }
            field_map_.push_back(std::move(r));
        }
        try {
            api_ = std::make_unique<landbot::LandbotApi>(
                landbot::ApiConfig{host.string("api_base"), api_token_,
                                   host.duration_ms("api_timeout")});
        } catch (const std::invalid_argument& e) {
            throw sb::Error(SB_ERR_INVALID, std::string("config key 'api_base': ") + e.what());
        }
        path_ = "/hooks/landbot/" + host.instance_name();
    }

    void start() {
        load_state();
        host().route("POST", path_.c_str(),
                     [this](const sb::HttpRequest& req, sb::HttpResponse& resp) { handle(req, resp); });
        timer_ = host().timer(kTickMs, kTickMs, [this] { tick(); });
        if (api_token_.empty())
            host().warn("api_token is not set: the erase hook cannot delete conversations at "
                        "Landbot (erase tasks will wait until it is)");
        if (allow_apichat_)
            host().warn("allow_apichat is set: APIchat deliveries without a token are accepted; "
                        "restrict who can reach " + path_);
        host().info("listening on " + path_ + "; " + std::to_string(open_count()) +
                    " open conversation(s) restored");
    }

    void stop() {
        // Open conversations stay in durable state and resume after a restart.
        if (timer_) host().cancel_timer(timer_);
        timer_ = 0;
    }

    sb::Status erase(const sb::EraseRequest& req) {
        host().count("erase_requests");
        std::optional<std::string> cid;
        if (req.record)
            if (auto s = req.record->meta(SB_META_SUBJECT_REF)) cid = std::string(*s);
        if (!cid) { // "landbot:<customer>:<message>"
            std::string_view ext = req.external_id;
            if (ext.substr(0, 8) == "landbot:") {
                ext.remove_prefix(8);
                cid = std::string(ext.substr(0, ext.find(':')));
            }
        }
        landbot::Val v;
        v.type = SB_VALUE_STRING;
        v.s = cid.value_or("");
        if (!cid || !landbot::detail::id_from(v)) {
            host().count("erase_permanent");
            throw sb::Error(SB_ERR_PERMANENT, "record " + std::string(req.record_id) +
                                                  " carries no usable Landbot customer id");
        }
        const std::string path = "/customers/" + *cid + "/";
        const std::string rec = "record " + std::string(req.record_id);
        // A data subject's erasure request also covers what this plugin holds
        // of them and has not emitted yet: their open conversation. (At
        // retention expiry it does not: that conversation is newer and gets
        // its own retention clock when it closes.)
        if (req.reason == SB_ERASE_REQUEST && !drop_open(*cid)) {
            host().count("erase_transient");
            throw sb::Error(SB_ERR_TRANSIENT, rec + ": could not drop the customer's open "
                                                    "conversation from state; retried later");
        }
        if (api_token_.empty()) {
            host().count("erase_transient");
            throw sb::Error(SB_ERR_TRANSIENT, "api_token is not configured; cannot delete the "
                                              "customer at Landbot");
        }
        landbot::ApiReply del = call_with_retries("DELETE", path);
        if (del.status == 404 || del.status == 410) {
            host().count("erase_already_gone");
            host().info("erase " + rec + ": customer already deleted at Landbot (" +
                        std::to_string(del.status) + ")");
            return SB_OK;
        }
        if (del.status < 200 || del.status > 299) return fail("DELETE", del, rec);

        landbot::ApiReply get = call_with_retries("GET", path);
        if (get.status == 404 || get.status == 410) {
            host().count("erase_confirmed");
            host().info("erase " + rec + ": customer deleted at Landbot (DELETE " +
                        std::to_string(del.status) + ", GET " + std::to_string(get.status) + ")");
            return SB_OK;
        }
        if (get.status >= 200 && get.status <= 299) {
            host().count("erase_transient");
            throw sb::Error(SB_ERR_TRANSIENT, rec + ": Landbot answered DELETE " +
                                                  std::to_string(del.status) +
                                                  " but the customer is still there (GET " +
                                                  std::to_string(get.status) + ")");
        }
        return fail("confirming GET", get, rec);
    }

private:
    // --- HTTP -----------------------------------------------------------------

    void handle(const sb::HttpRequest& req, sb::HttpResponse& resp) {
        host().count("deliveries");
        const std::int64_t now = host().now_ms();

        // Authentication. The token is compared in constant time. A request
        // without any Authorization header may only be an APIchat delivery,
        // and only with allow_apichat (checked once the shape is known).
        auto auth = req.header("Authorization");
        bool token_ok = false;
        if (auth) {
            std::string_view a = trim(*auth);
            std::string expected = "Token " + token_;
            token_ok = same_secret(a, expected);
            if (!token_ok) return unauthorized(resp, "wrong or malformed Authorization header");
        } else if (!allow_apichat_) {
            return unauthorized(resp, "no Authorization header");
        }

        std::string trace;
        if (auto t = req.header("sentry-trace")) {
            std::string_view tv = trim(*t);
            bool printable = tv.size() <= kMaxTraceLength;
            for (char c : tv) printable = printable && c > 0x20 && c < 0x7f;
            if (printable) trace = std::string(tv);
        }
        if (!trace.empty() && trace_seen(trace, now)) {
            host().count("deliveries_duplicate");
            return resp.respond(200, "{\"status\":\"duplicate\"}");
        }
        const std::string ref = trace.empty()
                                    ? "delivery-" + std::to_string(++delivery_seq_)
                                    : "sentry-trace " + trace.substr(0, 64);
        std::string_view body = req.body();

        if (body.size() > max_message_) {
            // Unauthenticated bytes are not worth storing: 401.
            if (!token_ok) return unauthorized(resp, "oversized body without a token");
            // A 4xx would be retried (at least six times) for nothing; 200
            // and keep a bounded, redacted prefix as evidence.
            host().count("deliveries_oversized");
            landbot::RedactCounts rc;
            std::string head = landbot::redacted_prefix(body, kQuarantineHead, &rc);
            count_redactions(rc);
            std::string why = "body of " + std::to_string(body.size()) +
                              " bytes is over max_message (" + std::to_string(max_message_) +
                              " bytes); first " + std::to_string(head.size()) + " bytes kept";
            return quarantine_and_answer(resp, head, why, ref, trace, now, "too large");
        }

        landbot::Delivery d;
        std::string error;
        if (!landbot::parse_delivery(body, d, error)) {
            if (!token_ok) return unauthorized(resp, "unreadable body without a token");
            host().count("deliveries_malformed");
            landbot::RedactCounts rc;
            std::string kept = landbot::redact(body, &rc);
            count_redactions(rc);
            return quarantine_and_answer(resp, kept, "malformed: " + error, ref, trace, now,
                                         "malformed");
        }
        if (!token_ok && !d.apichat)
            return unauthorized(resp, "a Platform delivery without a token");
        if (d.apichat) host().count("deliveries_apichat");

        // One group per customer (Landbot sends one message per POST; a
        // batch is handled anyway).
        std::map<std::string, std::vector<const Message*>> groups;
        for (const auto& m : d.messages) groups[m.customer_id].push_back(&m);
        const std::size_t batch = d.messages.size() + d.problems.size();
        if (batch > 1) host().count("deliveries_batched");
        std::size_t accepted = 0, duplicates = 0;
        bool unavailable = false;
        for (auto& [cid, msgs] : groups) {
            std::size_t a = 0, dup = 0;
            Outcome o = accept(cid, msgs, trace, now, batch, d.apichat, a, dup);
            if (o == Outcome::Unavailable) unavailable = true;
            accepted += a;
            duplicates += dup;
        }
        if (unavailable) {
            // Not (all) durable: Landbot must retry; what did commit is
            // deduplicated then.
            host().count("deliveries_unavailable");
            return resp.respond(503, "{\"error\":\"not stored; retry\"}");
        }
        if (!d.problems.empty()) {
            host().count("messages_unusable", d.problems.size());
            std::string why;
            for (const auto& p : d.problems) why += (why.empty() ? "" : "; ") + p;
            landbot::RedactCounts rc;
            std::string kept = landbot::redact(body, &rc);
            count_redactions(rc);
            return quarantine_and_answer(resp, kept, why, ref, trace, now, "partly unusable",
                                         accepted, duplicates);
        }
        if (!trace.empty()) remember_trace(trace, now);
        if (accepted) host().count("messages_accepted", accepted);
        if (duplicates) host().count("messages_duplicate", duplicates);
        resp.respond(200, "{\"status\":\"accepted\",\"messages\":" + std::to_string(accepted) +
                              ",\"duplicates\":" + std::to_string(duplicates) + "}");
    }

    void unauthorized(sb::HttpResponse& resp, const char* why) {
        host().count("deliveries_unauthorized");
        host().warn(std::string("refused a delivery (401): ") + why);
        resp.header("WWW-Authenticate", "Token");
        resp.respond(401, "{\"error\":\"unauthorized\"}");
    }

    void quarantine_and_answer(sb::HttpResponse& resp, std::string_view bytes, const std::string& why,
                               const std::string& ref, const std::string& trace, std::int64_t now,
                               const char* status, std::size_t accepted = 0,
                               std::size_t duplicates = 0) {
        sb::Status s = host().quarantine(bytes, why, ref.c_str());
        if (s != SB_OK) {
            host().count("quarantine_failed");
            host().error("could not quarantine a delivery (" + why + "); answered 503");
            return resp.respond(503, "{\"error\":\"not stored; retry\"}");
        }
        host().count("deliveries_quarantined");
        host().warn("quarantined " + ref + ": " + why);
        if (!trace.empty()) remember_trace(trace, now);
        if (accepted) host().count("messages_accepted", accepted);
        if (duplicates) host().count("messages_duplicate", duplicates);
        resp.respond(200, std::string("{\"status\":\"quarantined\",\"reason\":\"") + status +
                              "\",\"messages\":" + std::to_string(accepted) + "}");
    }

    void count_redactions(const landbot::RedactCounts& rc) {
        if (rc.cards) host().count("cards_redacted", rc.cards);
        if (rc.cvv) host().count("cvv_redacted", rc.cvv);
        if (rc.expiry) host().count("expiry_redacted", rc.expiry);
        if (rc.nino) host().count("ninos_redacted", rc.nino);
    }

    // --- delivery ids seen (fast path; the durable check is per customer) ---

    bool trace_seen(const std::string& t, std::int64_t now) {
        std::lock_guard lock(traces_m_);
        auto it = traces_.find(t);
        return it != traces_.end() && it->second > now;
    }
    void remember_trace(const std::string& t, std::int64_t now) {
        std::lock_guard lock(traces_m_);
        if (traces_.size() >= kMaxTraces) return; // the durable check still holds
        traces_[t] = now + dedupe_ms_;
    }

    // --- conversations ----------------------------------------------------------

    static std::string key_of(const std::string& cid) { return "conv:" + cid; }

    std::shared_ptr<Slot> slot_for(const std::string& cid) {
        std::lock_guard lock(map_m_);
        auto& s = slots_[cid];
        if (!s || s->gone) {
            s = std::make_shared<Slot>();
            s->c.cid = cid;
        }
        return s;
    }

    // Adds the messages of one customer from one delivery. Under the
    // customer's lock: dedupe, build the next state, commit it, then answer.
    Outcome accept(const std::string& cid, const std::vector<const Message*>& msgs,
                   const std::string& trace, std::int64_t now, std::size_t batch, bool apichat,
                   std::size_t& accepted, std::size_t& duplicates) {
        std::shared_ptr<Slot> slot;
        std::unique_lock<std::mutex> lock;
        for (;;) {
            slot = slot_for(cid);
            lock = std::unique_lock(slot->m);
            if (!slot->gone) break;
            lock.unlock();
        }
        Conversation next = slot->c;
        auto seen = [&](const std::string& k) {
            for (const auto& t : next.turns)
                if ((k[0] == 'u' && t.id == std::string_view(k).substr(2)) ||
                    (k[0] == 't' && t.trace == std::string_view(k).substr(2)))
                    return true;
            for (const auto& r : next.recent)
                if (r.first == k && r.second > now) return true;
            return false;
        };
        if (!trace.empty() && seen("t:" + trace)) {
            duplicates += msgs.size();
            return Outcome::Duplicate;
        }
        const bool opening = !next.open();
        landbot::RedactCounts rc;
        std::size_t added = 0;
        for (const Message* m : msgs) {
            Turn t = make_turn(*m, trace, now, apichat, next, rc);
            if (seen("u:" + t.id)) {
                ++duplicates;
                continue;
            }
            if (next.turns.empty()) next.opened_ms = now;
            t.n = next.next_n++;
            update_snapshot(next, *m, t.ts_us, now, rc);
            next.turns.push_back(std::move(t));
            ++added;
        }
        if (!added) return Outcome::Duplicate;
        if (batch > 1) next.add_defect("batched delivery: several messages in one POST");
        next.last_ms = now;
        count_redactions(rc);

        std::string json = landbot::to_json(next);
        const char* reason = next.turns.size() >= max_turns_       ? "max_turns"
                             : json.size() >= max_conversation_    ? "max_conversation"
                                                                   : nullptr;
        if (reason) {
            if (!emit_conversation(next, reason, now)) return Outcome::Unavailable;
        } else {
            if (!ensure_indexed(cid)) return Outcome::Unavailable;
            if (host().set_state(key_of(cid).c_str(), json) != SB_OK) {
                host().count("state_unavailable");
                host().error("could not store a message durably; answered 503");
                return Outcome::Unavailable;
            }
        }
        if (opening) host().count("conversations_opened");
        slot->c = std::move(next);
        accepted += added;
        return Outcome::Accepted;
    }

    Turn make_turn(const Message& m, const std::string& trace, std::int64_t now, bool apichat,
                   Conversation& c, landbot::RedactCounts& rc) {
        Turn t;
        t.trace = trace;
        if (m.ts_us) {
            t.ts_us = *m.ts_us;
        } else {
            t.ts_us = now * 1000;
            c.add_defect("message without a usable timestamp: receipt time used");
        }
        t.seq = m.seq;
        t.type = m.type;
        t.author = m.author;
        if (m.text) {
            std::vector<std::string> ninos;
            t.text = landbot::redact(*m.text, &rc, nino_identifier_ ? &ninos : nullptr);
            if (nino_identifier_ && !ninos.empty() && m.author == "citizen" && !c.nino)
                c.nino = ninos.front();
        } else {
            host().count("turns_opaque");
        }
        if (m.author == "agent") {
            t.agent_id = m.sender_id.value_or("");
            if (m.sender_name) t.agent_name = cards_out(*m.sender_name, rc);
        }
        t.channel = channel_of(m, apichat, c);
        if (m.uuid) {
            t.id = *m.uuid;
        } else {
            // Redacted text only: the hash must not be a fingerprint of a
            // card number.
            t.id = "h:" + fnv_hex(m.customer_id + "|" + std::to_string(t.ts_us) + "|" + t.type +
                                  "|" + t.author + "|" + t.text.value_or(""));
        }
        return t;
    }

    static std::string channel_of(const Message& m, bool apichat, Conversation& c) {
        if (apichat) return "web_chat"; // MODELLED: a custom channel bridged by APIchat
        if (!m.channel_type) {
            c.add_defect("message without channel.type: web_chat assumed");
            return "web_chat";
        }
        const std::string& t = *m.channel_type;
        if (t == "landbot") return "web_chat";
        if (t == "whatsapp") return "whatsapp";
        if (t == "whatsapi" || t == "whatsappsandbox") {
            c.add_defect("legacy or sandbox channel.type: whatsapp assumed");
            return "whatsapp";
        }
        if (t == "facebook" || t == "messenger" || t == "instagram" || t == "telegram")
            return "social";
        c.add_defect("unknown channel.type: web_chat assumed");
        return "web_chat";
    }

    static std::string cards_out(const std::string& s, landbot::RedactCounts& rc) {
        return landbot::redact(s, &rc, nullptr, landbot::RedactOptions{true, false});
    }

    // The customer's details come from the newest message that carries them;
    // an older one only fills gaps.
    void update_snapshot(Conversation& c, const Message& m, std::int64_t ts_us, std::int64_t now,
                         landbot::RedactCounts& rc) {
        const bool newer = ts_us >= c.snap_us;
        if (newer) c.snap_us = ts_us;
        auto put = [&](std::optional<std::string>& dst, const std::optional<std::string>& src) {
            if (src && (newer || !dst)) dst = cards_out(*src, rc);
        };
        // "Visitor #123" is Landbot's label for an anonymous web visitor, not
        // a name: it identifies no one and would mislead a name search.
        std::optional<std::string> name = m.name;
        if (name && name->rfind("Visitor #", 0) == 0) name.reset();
        put(c.name, name);
        put(c.phone, m.phone);
        put(c.email, m.email);
        put(c.agent_id, m.agent_id);
        put(c.channel_name, m.channel_name);
        put(c.channel_id, m.channel_id);
        if (close_on_archive_ && m.archived && newer) c.archived_ms = *m.archived ? now : 0;

        auto value_of = [&](const std::string& key) -> std::optional<Custom> {
            for (const auto& [k, v] : m.custom)
                if (k == key) return landbot::demangle(v);
            for (const auto& [k, v] : m.lists)
                if (k == key) return v;
            return std::nullopt;
        };
        // Hints: the first configured field present.
        for (const auto& h : hint_fields_) {
            auto v = value_of(h);
            if (!v) continue;
            auto values = landbot::custom_values(*v);
            if (values.empty()) continue;
            if (newer || c.hints.empty()) {
                c.hints.clear();
                for (auto& s : values)
                    if (c.hints.size() < 32) c.hints.push_back(cards_out(s, rc));
            }
            break;
        }
        for (const auto& rule : field_map_) {
            auto v = value_of(rule.key);
            if (!v || v->kind == Custom::Kind::Null) continue;
            landbot::Mapped mp;
            mp.path = rule.path;
            mp.category = rule.category;
            if (v->kind == Custom::Kind::Bool) {
                mp.is_bool = true;
                mp.b = v->b;
            } else {
                std::string joined;
                for (const auto& s : landbot::custom_values(*v))
                    joined += (joined.empty() ? "" : ", ") + s;
                mp.s = cards_out(joined, rc);
            }
            auto it = std::find_if(c.mapped.begin(), c.mapped.end(),
                                   [&](const landbot::Mapped& x) { return x.path == mp.path; });
            if (it == c.mapped.end())
                c.mapped.push_back(std::move(mp));
            else if (newer)
                *it = std::move(mp);
        }
        std::size_t unmapped = 0;
        auto mapped_or_hint = [&](const std::string& k) {
            if (std::find(hint_fields_.begin(), hint_fields_.end(), k) != hint_fields_.end())
                return true;
            for (const auto& r : field_map_)
                if (r.key == k) return true;
            return false;
        };
        for (const auto& [k, v] : m.custom) unmapped += !mapped_or_hint(k);
        for (const auto& [k, v] : m.lists) unmapped += !mapped_or_hint(k);
        unmapped += m.nested_custom;
        if (unmapped) host().count("custom_fields_ignored", unmapped);
    }

    // Durable before the conversation's own key is first written, so that a
    // restart finds every key (an index entry without a key is harmless).
    bool ensure_indexed(const std::string& cid) {
        std::lock_guard lock(index_m_);
        if (index_.count(cid)) return true;
        index_.insert(cid);
        std::vector<std::string> all(index_.begin(), index_.end());
        if (host().set_state("index", landbot::index_json(all)) != SB_OK) {
            index_.erase(cid);
            host().count("state_unavailable");
            host().error("could not store the conversation index durably; answered 503");
            return false;
        }
        return true;
    }

    // Emits `c` as one record and, in the same commit, replaces its state
    // with the dedupe keys alone. On success `c` holds just those.
    bool emit_conversation(Conversation& c, const char* reason, std::int64_t now) {
        Conversation after = c;
        after.clear_open();
        for (const Turn& t : c.turns) {
            after.recent.emplace_back("u:" + t.id, now + dedupe_ms_);
            if (!t.trace.empty()) after.recent.emplace_back("t:" + t.trace, now + dedupe_ms_);
        }
        std::erase_if(after.recent, [&](const auto& r) { return r.second <= now; });
        if (after.recent.size() > kMaxRecent)
            after.recent.erase(after.recent.begin(),
                               after.recent.end() - static_cast<std::ptrdiff_t>(kMaxRecent));
        if (!ensure_indexed(c.cid)) return false;

        std::vector<sb::Record> batch;
        std::size_t turns = c.turns.size();
        try {
            batch.push_back(build_record(c, reason));
        } catch (const std::exception& e) {
            host().count("conversations_unbuildable");
            host().error(std::string("could not build a conversation record: ") + e.what());
            return false;
        }
        std::vector<sb::Status> results;
        std::string state = landbot::to_json(after);
        sb::Status s = host().emit_batch(batch, key_of(c.cid).c_str(), state.c_str(), &results);
        if (s != SB_OK) {
            host().count("emit_unavailable");
            // Once per outage, not once per tick.
            if (!emit_failing_.exchange(true))
                host().warn("journal did not commit a conversation (" +
                            std::string(sb::status_name(s)) +
                            "); it stays open and is tried again every second");
            return false;
        }
        if (emit_failing_.exchange(false)) host().info("journal commits conversations again");
        sb::Status r = results.empty() ? SB_OK : results[0];
        if (r == SB_OK) {
            host().count("conversations_emitted");
            host().info("conversation closed (" + std::to_string(turns) + " turn(s), " + reason + ")");
        } else if (r == SB_DUPLICATE) {
            host().count("conversations_duplicate");
        } else {
            host().count("conversations_refused");
            host().warn("the journal refused a conversation (" + std::string(sb::status_name(r)) +
                        ", " + std::to_string(turns) + " turn(s)); see the core's log for why");
        }
        c = std::move(after);
        return true;
    }

    sb::Record build_record(const Conversation& c, const char* reason) {
        std::vector<Turn> turns = c.turns;
        landbot::sort_turns(turns);
        const Turn& first = turns.front();
        sb::Record r = host().record();
        r.meta(SB_META_CHANNEL, first.channel);
        r.meta(SB_META_OCCURRED_AT, sb::format_time(first.ts_us / 1000));
        r.meta(SB_META_EXTERNAL_ID, "landbot:" + c.cid + ":" + first.id);
        r.meta(SB_META_SUBJECT_REF, c.cid);

        if (c.name) r.set("citizen.name", *c.name, "identity.name");
        if (c.phone) r.set("contact.phone", *c.phone, "contact.phone");
        if (c.email) r.set("contact.email", *c.email, "contact.email");
        for (const auto& m : c.mapped) {
            if (m.is_bool)
                r.set(m.path, m.b, m.category.c_str());
            else
                r.set(m.path, m.s, m.category.c_str());
        }
        if (!c.hints.empty()) {
            r.set("hints.topic", c.hints.front(), "classification.hint");
            if (c.hints.size() > 1)
                for (std::size_t k = 0; k < c.hints.size(); ++k)
                    r.set("hints.topics[" + std::to_string(k) + "]", c.hints[k],
                          "classification.hint");
        }
        if (c.channel_name) r.set("hints.channel", *c.channel_name, "classification.hint");
        if (nino_identifier_ && c.nino) r.set("identifiers.nino", *c.nino, "identifier.nino");
        r.set("vendor.customer_id", c.cid, "vendor.id");
        if (c.channel_id) r.set("vendor.channel_id", *c.channel_id, "vendor.id");

        // The council agent who took part (the first one to write), else
        // the one Landbot had assigned.
        std::string agent_id, agent_name;
        for (const Turn& t : turns)
            if (t.author == "agent" && (!t.agent_id.empty() || !t.agent_name.empty())) {
                agent_id = t.agent_id;
                agent_name = t.agent_name;
                break;
            }
        if (agent_id.empty() && agent_name.empty() && c.agent_id) agent_id = *c.agent_id;
        if (!agent_id.empty()) r.set("agent.id", agent_id, "staff.id");
        if (!agent_name.empty()) r.set("agent.name", agent_name, "staff.name");

        std::vector<std::string> defects = c.defects;
        for (const Turn& t : turns)
            if (t.channel != first.channel) {
                defects.push_back("messages from more than one channel type");
                break;
            }
        for (std::size_t k = 0; k < turns.size(); ++k) {
            const Turn& t = turns[k];
            const std::string p = "content.turns[" + std::to_string(k) + "].";
            r.set(p + "author", t.author, "content.meta");
            r.set(p + "at", sb::format_time(t.ts_us / 1000), "content.meta");
            r.set(p + "type", t.type, "content.meta");
            if (t.text) r.set(p + "text", *t.text, "content.free_text");
        }
        r.set("content.closed_by", reason, "content.meta");
        for (std::size_t k = 0; k < defects.size(); ++k)
            r.set("defects[" + std::to_string(k) + "]", defects[k], "operational.defect");
        return r;
    }

    // Forgets the customer's open conversation (keeping only the dedupe
    // keys). False if the state could not be written.
    bool drop_open(const std::string& cid) {
        std::shared_ptr<Slot> slot;
        {
            std::lock_guard lock(map_m_);
            auto it = slots_.find(cid);
            if (it == slots_.end()) return true;
            slot = it->second;
        }
        std::lock_guard lock(slot->m);
        if (slot->gone || !slot->c.open()) return true;
        Conversation next = slot->c;
        const std::int64_t now = host().now_ms();
        for (const Turn& t : next.turns) {
            next.recent.emplace_back("u:" + t.id, now + dedupe_ms_);
            if (!t.trace.empty()) next.recent.emplace_back("t:" + t.trace, now + dedupe_ms_);
        }
        std::size_t turns = next.turns.size();
        next.clear_open();
        if (host().set_state(key_of(cid).c_str(), landbot::to_json(next)) != SB_OK) return false;
        slot->c = std::move(next);
        host().count("conversations_dropped");
        host().info("erasure request: dropped an open conversation (" + std::to_string(turns) +
                    " turn(s)) before it was emitted");
        return true;
    }

    // --- the close timer --------------------------------------------------------

    const char* due(const Conversation& c, std::int64_t now) const {
        if (!c.open()) return nullptr;
        if (c.archived_ms && now - c.archived_ms >= kArchiveGraceMs) return "archived";
        if (now - c.last_ms >= quiet_ms_) return "quiet";
        if (now - c.opened_ms >= max_duration_ms_) return "max_duration";
        return nullptr;
    }

    void tick() {
        const std::int64_t now = host().now_ms();
        std::vector<std::shared_ptr<Slot>> slots;
        {
            std::lock_guard lock(map_m_);
            for (auto& [cid, s] : slots_) slots.push_back(s);
        }
        std::size_t open = 0;
        bool removed = false;
        for (auto& slot : slots) {
            std::lock_guard lock(slot->m);
            if (slot->gone) continue;
            Conversation& c = slot->c;
            if (const char* reason = due(c, now)) emit_conversation(c, reason, now);
            if (c.open()) {
                ++open;
                continue;
            }
            std::erase_if(c.recent, [&](const auto& r) { return r.second <= now; });
            if (!c.recent.empty()) continue;
            // Nothing open and nothing left to remember: drop the key.
            if (host().clear_state(key_of(c.cid).c_str()) != SB_OK) continue;
            slot->gone = true;
            removed = true;
            std::lock_guard map_lock(map_m_);
            auto it = slots_.find(c.cid);
            if (it != slots_.end() && it->second == slot) slots_.erase(it);
        }
        host().gauge("open_conversations", static_cast<double>(open));
        if (removed || index_dirty_) prune_index();
        {
            std::lock_guard lock(traces_m_);
            std::erase_if(traces_, [&](const auto& t) { return t.second <= now; });
        }
    }

    // Drops index entries whose customer has no slot any more. An entry
    // only goes once its key is gone; a failure just leaves extra entries.
    void prune_index() {
        std::lock_guard map_lock(map_m_);
        std::lock_guard lock(index_m_);
        std::set<std::string> keep;
        for (const auto& cid : index_)
            if (slots_.count(cid)) keep.insert(cid);
        if (keep.size() == index_.size() && !index_dirty_) return;
        std::vector<std::string> all(keep.begin(), keep.end());
        sb::Status s = all.empty() ? host().clear_state("index")
                                   : host().set_state("index", landbot::index_json(all));
        index_dirty_ = s != SB_OK;
        if (s == SB_OK) index_ = std::move(keep);
    }

    std::size_t open_count() {
        std::lock_guard lock(map_m_);
        std::size_t n = 0;
        for (auto& [cid, s] : slots_) n += s->c.open();
        return n;
    }

    // Restores the open conversations (and dedupe keys) of a previous run.
    void load_state() {
        auto idx = host().state("index");
        if (!idx) return;
        std::vector<std::string> cids;
        if (!landbot::index_from_json(*idx, cids)) {
            host().error("stored state 'index' is not readable; open conversations of the "
                         "previous run are not restored");
            host().quarantine(*idx, "unreadable conversation index", "state:index");
            return;
        }
        std::lock_guard lock(index_m_);
        for (const auto& cid : cids) {
            index_.insert(cid);
            auto v = host().state(key_of(cid).c_str());
            if (!v) continue;
            auto slot = std::make_shared<Slot>();
            std::string error;
            if (!landbot::from_json(*v, slot->c, error) || slot->c.cid != cid) {
                // Keep it as evidence (it expires with the quarantine) rather
                // than lose it silently, then drop the key.
                host().error("a stored conversation is not readable (" + error +
                             "); quarantined");
                if (host().quarantine(*v, "unreadable conversation state: " + error,
                                      "state:conv") == SB_OK)
                    host().clear_state(key_of(cid).c_str());
                continue;
            }
            std::lock_guard map_lock(map_m_);
            slots_[cid] = std::move(slot);
        }
    }

    // --- Landbot API ----------------------------------------------------------------

    // Repeats a request on 429, 5xx and network errors, up to api_attempts,
    // waiting Retry-After (429) or a doubling backoff, never longer than
    // api_max_wait: beyond that the core's own retry (backoff up to 1 h)
    // takes over.
    landbot::ApiReply call_with_retries(const char* method, const std::string& path) {
        landbot::ApiReply r;
        std::int64_t backoff = 500;
        for (int attempt = 1;; ++attempt) {
            r = api_->call(method, path);
            bool retry = r.status == 0 || r.status == 429 || r.status >= 500;
            if (!retry || attempt >= api_attempts_) return r;
            std::int64_t wait = r.status == 429 && r.retry_after_ms ? *r.retry_after_ms : backoff;
            if (wait > api_max_wait_ms_) return r;
            host().count("api_retries");
            std::this_thread::sleep_for(std::chrono::milliseconds(wait));
            backoff = std::min<std::int64_t>(backoff * 2, api_max_wait_ms_);
        }
    }

    sb::Status fail(const char* what, const landbot::ApiReply& r, const std::string& rec) {
        if (r.status == 0 || r.status == 429 || r.status >= 500) {
            host().count("erase_transient");
            std::string why = r.status == 0 ? "no answer (" + r.error + ")"
                              : r.status == 429
                                  ? "rate limited (429" +
                                        (r.retry_after_ms ? ", Retry-After " +
                                                                std::to_string(*r.retry_after_ms / 1000) + "s"
                                                          : std::string()) +
                                        ")"
                                  : "server error " + std::to_string(r.status);
            throw sb::Error(SB_ERR_TRANSIENT, rec + ": Landbot " + what + ": " + why +
                                                  "; retried later");
        }
        host().count("erase_permanent");
        std::string hint = r.status == 401 || r.status == 403 ? " (is api_token a valid agent token?)" : "";
        throw sb::Error(SB_ERR_PERMANENT, rec + ": Landbot answered " + what + " with " +
                                              std::to_string(r.status) + hint);
    }

    // Configuration.
    const std::string token_;
    const bool allow_apichat_;
    const std::int64_t quiet_ms_;
    const std::int64_t max_duration_ms_;
    const std::size_t max_turns_;
    const std::size_t max_conversation_;
    const std::size_t max_message_;
    const std::vector<std::string> hint_fields_;
    const bool close_on_archive_;
    const bool nino_identifier_;
    const std::int64_t dedupe_ms_;
    const std::string api_token_;
    const int api_attempts_;
    const std::int64_t api_max_wait_ms_;
    std::vector<FieldRule> field_map_;
    std::unique_ptr<landbot::LandbotApi> api_;
    std::string path_;

    // Lock order: a Slot's mutex, then map_m_, then index_m_ (never back).
    std::mutex map_m_;
    std::unordered_map<std::string, std::shared_ptr<Slot>> slots_;
    std::mutex index_m_;
    std::set<std::string> index_; // customers whose key may exist (durable in "index")
    bool index_dirty_ = false;
    std::mutex traces_m_;
    std::unordered_map<std::string, std::int64_t> traces_;
    std::atomic<std::uint64_t> delivery_seq_{0};
    std::atomic<bool> emit_failing_{false};
    std::uint64_t timer_ = 0;
};

} // namespace

SB_PLUGIN(LandbotSource)
