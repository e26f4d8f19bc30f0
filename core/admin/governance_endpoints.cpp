#include "admin/governance_endpoints.hpp"

#include "audit/audit_log.hpp"
#include "governance/erasure.hpp"
#include "governance/holds.hpp"
#include "governance/sar.hpp"
#include "log.hpp"
#include "pipeline/journal.hpp"
#include "store/store.hpp"
#include "util/text.hpp"

#include <Poco/Exception.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <initializer_list>
#include <chrono>
#include <optional>
#include <thread>

namespace switchboard::admin {

namespace {

// Ids, counts and endpoint names only: never an identifier, never a reason.
constexpr const char* kComponent = "admin";

using Object = Poco::JSON::Object::Ptr;

const char* kIdentifierExample = R"({"phone": "07700 900123"})";

std::string time_or_null(std::int64_t t) { return t ? json_string(text::format_time_ms(t)) : "null"; }
std::string string_or_null(const std::string& s) { return s.empty() ? "null" : json_string(s); }

// Names an unexpected key in an answer: shortened, it came from the caller.
std::string shown_key(const std::string& key) { return key.size() > 40 ? key.substr(0, 40) + "..." : key; }

// The body as a JSON object; otherwise answers 413 or 400 and returns null.
Object parse_body(const Call& call, http::Response& r, const std::string& example) {
    const std::string& body = call.request.body;
    if (body.size() > kMaxGovernanceBody) {
        respond_error(r, 413, "body: larger than " + std::to_string(kMaxGovernanceBody / 1024) + " KiB");
        return nullptr;
    }
    try {
        Poco::JSON::Parser parser;
        auto v = parser.parse(body.empty() ? std::string("{}") : body);
        if (v.type() == typeid(Object)) return v.extract<Object>();
    } catch (const Poco::Exception&) {
    } catch (const std::exception&) {
    }
    respond_error(r, 400, "body: expected a JSON object such as " + example);
    return nullptr;
}

// False (with `error`) when `obj` has a key not in `allowed`.
bool known_keys(const Object& obj, std::initializer_list<const char*> allowed, const std::string& within,
                std::string& error) {
    for (const auto& key : obj->getNames()) {
        if (std::any_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; })) continue;
        std::string list;
        for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        error = "unknown key '" + within + shown_key(key) + "'; use " + list;
        return false;
    }
    return true;
}

// The string at `key`, if present; false (with `error`) when it is there but
// not a non-empty string.
bool optional_string(const Object& obj, const std::string& key, const std::string& within,
                     std::optional<std::string>& out, std::string& error) {
    if (!obj->has(key)) return true;
    auto v = obj->get(key);
    if (!v.isString()) {
        error = within + key + ": expected a string";
        return false;
    }
    out = v.convert<std::string>();
    if (out->find_first_not_of(" \t\r\n") == std::string::npos) {
        error = within + key + ": empty; give a value or leave the key out";
        return false;
    }
    return true;
}

// The identifiers of a person, as `switchboard sar` takes them, from the keys
// of `obj` (SubjectQuery::field) other than `extra`; normalised, with the
// same refusals (a name needs a postcode). `within`: "" or "subject.".
bool read_subject(const Object& obj, const std::string& within, std::initializer_list<const char*> extra,
                  governance::SubjectQuery& q, std::string& error) {
    for (const auto& key : obj->getNames()) {
        if (std::any_of(extra.begin(), extra.end(), [&](const char* e) { return key == e; })) continue;
        std::string* field = q.field(key);
        if (!field) {
            std::string also;
            for (const char* e : extra) also += std::string(", ") + e;
            error = "unknown key '" + within + shown_key(key) + "'; use " + governance::SubjectQuery::kJsonKeys + also;
            return false;
        }
        std::optional<std::string> value;
        if (!optional_string(obj, key, within, value, error)) return false;
        *field = *value;
    }
    return q.normalise(error, governance::SubjectQuery::Naming::json_keys, within);
}

// Commits nothing and answers 503 when the store cannot write.
template <typename Fn>
bool writing(http::Response& r, const char* what, Fn&& fn) {
    try {
        fn();
        return true;
    } catch (const store::StoreError& e) {
        log::error(kComponent, std::string(what) + ": the journal could not commit: " + e.what());
        respond_error(r, 503, std::string("the journal could not commit the ") + what + "; see the node's log");
        return false;
    }
}

void no_store(http::Response& r) { r.headers.emplace_back("Cache-Control", "no-store"); }

// POST sar: {"phone": ..., ..., "hold": true}; ?format=html for the report.
void subject_access(const Node& node, const Call& call, http::Response& r) {
    std::string format = query_param(call.request.query, "format");
    if (!format.empty() && format != "json" && format != "html")
        return respond_error(r, 400, "format: expected json or html");
    auto obj = parse_body(call, r, R"({"phone": "07700 900123", "hold": true})");
    if (!obj) return;
    bool hold = false;
    if (obj->has("hold")) {
        if (!obj->get("hold").isBoolean()) return respond_error(r, 400, "hold: expected true or false");
        hold = obj->getValue<bool>("hold");
    }
    governance::SubjectQuery q;
    std::string error;
    if (!read_subject(obj, "", {"hold"}, q, error)) return respond_error(r, 400, error);

    auto& st = node.journal->store();
    // What the journal committed reaches the audit files first, so the
    // bundle lists the latest disclosures too.
    node.journal->flush_audit();
    std::int64_t now = node.clock();
    auto result = governance::find_subject(st, q, node.audit->dir(), now);
    if (hold) {
        bool placed = true;
        if (!writing(r, "hold", [&] { placed = governance::hold_found(st, result, call.caller, now, error); }))
            return;
        // A record found may have been deleted by retention meanwhile.
        if (!placed) return respond_error(r, 409, "hold: could not place the hold: " + error + "; ask again");
        if (result.hold)
            log::info(kComponent, "hold " + std::to_string(result.hold) + " placed on " +
                                      std::to_string(result.records.size()) + " record(s) for " + result.id);
    }
    no_store(r);
    if (format == "html") return r.respond(200, "text/html; charset=utf-8", governance::sar_html(result));
    r.respond(200, "application/json", governance::sar_json(result));
}

bool is_sar_id(const std::string& s) {
    // SAR-20261128T174012Z (governance::sar_id)
    if (s.size() != 20 || s.compare(0, 4, "SAR-") != 0 || s[12] != 'T' || s[19] != 'Z') return false;
    for (std::size_t i = 4; i < 19; ++i)
        if (i != 12 && (s[i] < '0' || s[i] > '9')) return false;
    return true;
}

// POST sar/close: {"sar": "SAR-..."}.
void close_subject_access(const Node& node, const Call& call, http::Response& r) {
    auto obj = parse_body(call, r, R"({"sar": "SAR-20261128T174012Z"})");
    if (!obj) return;
    std::string error;
    std::optional<std::string> sar;
    if (!known_keys(obj, {"sar"}, "", error) || !optional_string(obj, "sar", "", sar, error))
        return respond_error(r, 400, error);
    if (!sar) return respond_error(r, 400, "sar: required: the id of the subject access request to close");
    if (!is_sar_id(*sar))
        return respond_error(r, 400, "sar: expected a subject access request id such as SAR-20261128T174012Z");
    std::size_t n = 0;
    if (!writing(r, "end of the holds",
                 [&] { n = governance::end_sar_holds(node.journal->store(), *sar, call.caller, node.clock()); }))
        return;
    if (!n) return respond_error(r, 404, "no hold in force for " + *sar);
    log::info(kComponent, *sar + " closed: " + std::to_string(n) + " hold(s) ended");
    r.respond(200, "application/json",
              "{\"sar\":" + json_string(*sar) + ",\"holds_ended\":" + std::to_string(n) + "}");
}

std::string hold_json(const store::Hold& h, std::int64_t now) {
    std::string records = "[";
    for (std::size_t i = 0; i < h.records.size(); ++i) records += (i ? "," : "") + json_string(h.records[i]);
    records += "]";
    return "{\"id\":" + std::to_string(h.id) + ",\"state\":" + json_string(governance::hold_state(h, now)) +
           ",\"set_by\":" + json_string(h.set_by) + ",\"set_at\":" + time_or_null(h.set_at) +
           ",\"until\":" + time_or_null(h.until) + ",\"reason\":" + json_string(h.reason) +
           ",\"sar\":" + string_or_null(h.sar) + ",\"ended_at\":" + time_or_null(h.ended_at) +
           ",\"ended_by\":" + string_or_null(h.ended_by) + ",\"records\":" + records + "}";
}

// GET holds: as `switchboard hold list`.
void list_holds(const Node& node, http::Response& r) {
    std::int64_t now = node.clock();
    auto holds = node.journal->store().holds(std::nullopt);
    std::string body = "{\"holds\":[";
    std::size_t in_force = 0;
    for (std::size_t i = 0; i < holds.size(); ++i) {
        body += (i ? "," : "") + hold_json(holds[i], now);
        in_force += std::string_view(governance::hold_state(holds[i], now)) == "in force";
    }
    no_store(r);
    r.respond(200, "application/json",
              body + "],\"count\":" + std::to_string(holds.size()) + ",\"in_force\":" + std::to_string(in_force) + "}");
}

// The records a hold or an erasure is about: "records" (ids) or "subject"
// (a person's identifiers, found as POST sar finds them), exactly one of
// them (checked by the caller). Otherwise answers 400 or 404 and returns false.
bool target_records(const Node& node, const Object& obj, std::int64_t now, const char* nothing,
                    std::vector<std::string>& records, http::Response& r) {
    if (obj->has("records")) {
        auto arr = obj->getArray("records");
        if (!arr) {
            respond_error(r, 400, "records: expected an array of record ids such as [\"R12-0\"]");
            return false;
        }
        if (arr->size() == 0) {
            respond_error(r, 400, "records: empty; give at least one record id");
            return false;
        }
        for (std::size_t i = 0; i < arr->size(); ++i) {
            auto e = arr->get(static_cast<unsigned>(i));
            if (!e.isString()) {
                respond_error(r, 400, "records[" + std::to_string(i) + "]: expected a record id such as \"R12-0\"");
                return false;
            }
            records.push_back(e.convert<std::string>());
        }
        return true;
    }
    auto subject = obj->getObject("subject");
    if (!subject) {
        respond_error(r, 400, std::string("subject: expected an object of identifiers such as ") + kIdentifierExample);
        return false;
    }
    governance::SubjectQuery q;
    std::string error;
    if (!read_subject(subject, "subject.", {}, q, error)) {
        respond_error(r, 400, error);
        return false;
    }
    auto found = governance::find_subject(node.journal->store(), q, node.audit->dir(), now);
    for (const auto& f : found.records) records.push_back(f.id);
    if (records.empty()) {
        respond_error(r, 404, "subject: no records found (searched by " + q.kinds() + "); " + nothing);
        return false;
    }
    return true;
}

// POST holds: {"records": [ID, ...]} or {"subject": {identifiers}}, with
// "reason" and optionally "until"; as `switchboard hold add`.
void add_hold(const Node& node, const Call& call, http::Response& r) {
    auto obj = parse_body(call, r, R"({"records": ["R12-0"], "reason": "complaint C-17", "until": "2027-01-31"})");
    if (!obj) return;
    std::string error;
    std::optional<std::string> reason, until_text;
    if (!known_keys(obj, {"records", "subject", "reason", "until"}, "", error) ||
        !optional_string(obj, "reason", "", reason, error) || !optional_string(obj, "until", "", until_text, error))
        return respond_error(r, 400, error);
    if (obj->has("records") == obj->has("subject"))
        return respond_error(r, 400, "give either records (an array of record ids) or subject (a person's "
                                     "identifiers, as for POST sar), not both");
    if (!reason)
        return respond_error(r, 400, "reason: required: why the records are held (a complaint, a tribunal...)");
    std::int64_t now = node.clock();
    governance::HoldRequest h;
    h.reason = *reason;
    h.by = call.caller;
    if (until_text) {
        auto t = governance::parse_until(*until_text);
        if (!t) return respond_error(r, 400, "until: expected YYYY-MM-DD (through that day, UTC) or an RFC 3339 time");
        if (*t <= now) return respond_error(r, 400, "until: " + text::format_time_ms(*t) + " has passed");
        h.until = *t;
    }
    auto& st = node.journal->store();
    if (!target_records(node, obj, now, "nothing held", h.records, r)) return;
    std::optional<std::int64_t> id;
    if (!writing(r, "hold", [&] { id = governance::place_hold(st, h, now, error); })) return;
    // What is left to refuse once the body checked out: record ids that are
    // malformed or no longer stored.
    if (!id) return respond_error(r, 404, "records: " + error);
    auto placed = st.hold(*id);
    std::size_t n = placed ? placed->records.size() : h.records.size();
    log::info(kComponent, "hold " + std::to_string(*id) + " placed on " + std::to_string(n) + " record(s)");
    r.respond(201, "application/json", "{\"hold\":" + std::to_string(*id) + ",\"records\":" + std::to_string(n) + "}");
}

// A hold or erasure id in a path: 1 to 18 digits.
std::optional<std::int64_t> path_id(const std::string& text) {
    bool digits = !text.empty() && text.size() <= 18 &&
                  std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits) return std::nullopt;
    return std::stoll(text);
}

// POST holds/{id}/end; as `switchboard hold end`.
void end_hold(const Node& node, const Call& call, http::Response& r) {
    auto slash = call.rest.find('/');
    auto parsed = path_id(call.rest.substr(0, slash));
    if (slash == std::string::npos || call.rest.substr(slash + 1) != "end" || !parsed)
        return respond_error(r, 404, "no such admin endpoint: POST holds/ID/end ends hold ID");
    std::int64_t id = *parsed;
    auto& st = node.journal->store();
    bool ended = false;
    std::string error;
    if (!writing(r, "end of the hold", [&] { ended = governance::end_hold(st, id, call.caller, node.clock(), error); }))
        return;
    if (!ended) return respond_error(r, st.hold(id) ? 409 : 404, error);
    log::info(kComponent, "hold " + std::to_string(id) + " ended");
    auto h = st.hold(id);
    r.respond(200, "application/json",
              "{\"hold\":" + std::to_string(id) + ",\"state\":\"ended\",\"ended_by\":" + json_string(call.caller) +
                  ",\"ended_at\":" + time_or_null(h ? h->ended_at : 0) + "}");
}

// POST erasures: {"records": [ID, ...]} or {"subject": {identifiers}},
// optionally "wait": seconds (0-30) for the node to carry it out and the
// answers to come; as `switchboard erase`. 202 with the status while steps
// are outstanding, 200 once complete; 404 for records not in the store.
void add_erasure(const Node& node, const Call& call, http::Response& r) {
    auto obj = parse_body(call, r, R"({"subject": {"phone": "07700 900123"}, "wait": 10})");
    if (!obj) return;
    std::string error;
    if (!known_keys(obj, {"records", "subject", "wait"}, "", error)) return respond_error(r, 400, error);
    if (obj->has("records") == obj->has("subject"))
        return respond_error(r, 400, "give either records (an array of record ids) or subject (a person's "
                                     "identifiers, as for POST sar), not both");
    std::int64_t wait_s = 0;
    if (obj->has("wait")) {
        auto w = obj->get("wait");
        if (!w.isInteger() || w.convert<std::int64_t>() < 0 || w.convert<std::int64_t>() > kMaxEraseWaitSeconds)
            return respond_error(r, 400, "wait: expected whole seconds from 0 to " + std::to_string(kMaxEraseWaitSeconds));
        wait_s = w.convert<std::int64_t>();
    }
    std::int64_t now = node.clock();
    governance::ErasureRequest request;
    request.by = call.caller;
    if (!target_records(node, obj, now, "nothing to erase", request.records, r)) return;
    auto& st = node.journal->store();
    std::optional<std::int64_t> id;
    if (!writing(r, "erasure", [&] { id = governance::request_erasure(st, request, now, error); })) return;
    if (!id) return respond_error(r, 404, "records: " + error);
    log::info(kComponent, "erasure " + std::to_string(*id) + " placed for " + std::to_string(request.records.size()) +
                              " record(s)");
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_s);
    while (!governance::erasure_settled(st, *id) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    node.journal->flush_audit(); // the answers' entries, into the files read below
    auto status = governance::erasure_status(st, node.audit->dir(), *id, node.clock(), node.receipt_deadline_ms);
    no_store(r);
    if (!status) return respond_error(r, 500, "erasure " + std::to_string(*id) + " vanished; see the node's log");
    r.respond(status->complete() ? 200 : 202, "application/json", governance::erasure_json(*status));
}

// GET erasures: the erasures kept (newest first).
void list_erasures(const Node& node, http::Response& r) {
    std::string o = "{\"erasures\":[";
    bool first = true;
    for (const auto& e : node.journal->store().erasures(1000)) {
        o += first ? "" : ",";
        first = false;
        o += "{\"erasure\":" + std::to_string(e.id) + ",\"requested_by\":" + json_string(e.requested_by) +
             ",\"requested_at\":" + time_or_null(e.requested_at) + ",\"carried_out_at\":" + time_or_null(e.done_at) +
             "}";
    }
    o += "]}";
    no_store(r);
    r.respond(200, "application/json", o);
}

// GET erasures/{id}: what is confirmed and what is outstanding.
void erasure(const Node& node, const Call& call, http::Response& r) {
    auto id = path_id(call.rest);
    if (!id) return respond_error(r, 404, "no such admin endpoint: GET erasures/ID shows erasure ID");
    auto status = governance::erasure_status(node.journal->store(), node.audit->dir(), *id, node.clock(),
                                             node.receipt_deadline_ms);
    if (!status) return respond_error(r, 404, "no erasure " + call.rest);
    no_store(r);
    r.respond(200, "application/json", governance::erasure_json(*status));
}

} // namespace

bool add_governance_endpoints(AdminApi& api, const Node& node) {
    bool ok = true;
    ok &= api.add("POST", "sar", [&node](const Call& c, http::Response& r) { subject_access(node, c, r); });
    ok &= api.add("POST", "sar/close", [&node](const Call& c, http::Response& r) { close_subject_access(node, c, r); });
    ok &= api.add("GET", "holds", [&node](const Call&, http::Response& r) { list_holds(node, r); });
    ok &= api.add("POST", "holds", [&node](const Call& c, http::Response& r) { add_hold(node, c, r); });
    ok &= api.add("POST", "holds/*", [&node](const Call& c, http::Response& r) { end_hold(node, c, r); });
    ok &= api.add("POST", "erasures", [&node](const Call& c, http::Response& r) { add_erasure(node, c, r); });
    ok &= api.add("GET", "erasures", [&node](const Call&, http::Response& r) { list_erasures(node, r); });
    ok &= api.add("GET", "erasures/*", [&node](const Call& c, http::Response& r) { erasure(node, c, r); });
    return ok;
}

} // namespace switchboard::admin
