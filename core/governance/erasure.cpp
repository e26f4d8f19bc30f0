#include "governance/erasure.hpp"

#include "audit/audit_log.hpp"
#include "governance/holds.hpp"
#include "governance/json_out.hpp"
#include "pipeline/journal.hpp"
#include "util/text.hpp"

#include <switchboard/detail/abi.hpp>
#include <switchboard/detail/record_data.hpp>

#include <map>
#include <set>

namespace switchboard::governance {

std::optional<std::int64_t> request_erasure(store::Store& store, const ErasureRequest& request, std::int64_t now,
                                            std::string& error) {
    if (request.records.empty()) {
        error = "no records to erase";
        return std::nullopt;
    }
    if (request.by.empty()) {
        error = "an erasure needs the name of who asks for it";
        return std::nullopt;
    }
    store::Erasure e;
    e.requested_by = request.by;
    e.requested_at = now;
    std::vector<std::string> ids;
    std::vector<std::int64_t> chunks;
    if (!resolve_records(store, request.records, ids, chunks, error)) return std::nullopt;
    for (std::size_t i = 0; i < ids.size(); ++i) e.records.push_back({ids[i], chunks[i], "", ""});
    std::int64_t id = 0;
    store.write([&](store::Txn& txn) { id = txn.put_erasure(e); });
    return id;
}

namespace {

// The steps still open for `records` (reason "request"): (record, instance)
// -> the task asking, from the store alone.
std::map<std::pair<std::string, std::string>, store::EraseTask>
open_steps(store::Store& store, const std::set<std::string, std::less<>>& records) {
    std::map<std::pair<std::string, std::string>, store::EraseTask> open;
    for (auto& t : store.erase_tasks(INT64_MAX, 1'000'000)) {
        if (t.reason != SB_ERASE_REQUEST) continue;
        std::vector<store::EraseItem> items;
        if (!store::decode_items(t.items, items)) continue;
        for (std::size_t k = t.done; k < items.size(); ++k)
            if (records.count(items[k].record_id)) open[{items[k].record_id, t.instance}] = t;
    }
    return open;
}

std::set<std::string, std::less<>> erased_records(const store::Erasure& e) {
    std::set<std::string, std::less<>> out;
    for (const auto& r : e.records)
        if (r.outcome == "erased") out.insert(r.record_id);
    return out;
}

} // namespace

bool erasure_settled(store::Store& store, std::int64_t id) {
    auto e = store.erasure(id);
    if (!e || !e->done_at) return false;
    auto erased = erased_records(*e);
    return erased.empty() || open_steps(store, erased).empty();
}

std::optional<ErasureStatus> erasure_status(store::Store& store, const std::filesystem::path& audit_dir,
                                            std::int64_t id, std::int64_t now, std::int64_t receipt_deadline_ms) {
    auto e = store.erasure(id);
    if (!e) return std::nullopt;
    ErasureStatus s;
    s.id = e->id;
    s.requested_by = e->requested_by;
    s.requested_at = e->requested_at;
    s.done_at = e->done_at;
    for (const auto& r : e->records) {
        s.records.push_back({r.record_id, r.outcome, r.outcome == "erased" ? "" : r.detail, {}});
        if (r.outcome == "erased")
            for (const auto& instance : text::split(r.detail, ','))
                s.records.back().steps.push_back({instance, "outstanding", "", 0, "", false});
    }
    auto erased = erased_records(*e);
    if (erased.empty()) return s;
    // Settled steps: the erase entries (reason "request") of the audit trail.
    std::map<std::pair<std::string, std::string>, EraseStep> settled; // (record, instance)
    if (std::filesystem::exists(audit_dir))
        for (const auto& a : audit::AuditLog::read_records(audit_dir, erased)) {
            if (a.kind != audit::kind::erase.view() || a.ts_ms < e->done_at) continue;
            std::map<std::string, std::string> attrs;
            for (auto& [k, v] : audit::parse_detail(a.detail)) attrs[k] = v;
            if (attrs["reason"] != "request") continue;
            settled[{a.record_id, attrs["instance"]}] = {attrs["instance"], attrs["outcome"], attrs["receipt"], a.ts_ms,
                                                          "", false};
        }
    // Outstanding steps: the erase tasks still open, with why.
    auto open = open_steps(store, erased);
    for (auto& r : s.records)
        for (auto& step : r.steps) {
            if (auto it = settled.find({r.record_id, step.instance}); it != settled.end()) {
                step = it->second;
                ++s.settled;
                continue;
            }
            ++s.outstanding;
            if (auto it = open.find({r.record_id, step.instance}); it != open.end()) {
                step.waiting = it->second.last_error.empty() ? "asked; no answer yet" : it->second.last_error;
                step.overdue = now - it->second.created_at > receipt_deadline_ms;
            } else {
                step.waiting = "answered; its audit entry is being written";
            }
        }
    return s;
}

std::string erasure_json(const ErasureStatus& s) {
    std::string o = "{\"erasure\": " + std::to_string(s.id) + ", \"requested_by\": ";
    json_str(o, s.requested_by);
    o += ", \"requested_at\": ";
    json_time(o, s.requested_at);
    o += ", \"carried_out_at\": ";
    json_time(o, s.done_at);
    o += ", \"complete\": ";
    o += s.complete() ? "true" : "false";
    o += ", \"steps_settled\": " + std::to_string(s.settled) +
         ", \"steps_outstanding\": " + std::to_string(s.outstanding) + ",\n \"records\": [";
    for (std::size_t i = 0; i < s.records.size(); ++i) {
        const auto& r = s.records[i];
        o += i ? ",\n  {" : "\n  {";
        o += "\"id\": ";
        json_str(o, r.record_id);
        o += ", \"outcome\": ";
        json_str(o, r.outcome.empty() ? "pending" : r.outcome);
        if (r.outcome == "held") {
            o += ", \"holds\": [" + text::join(text::split(r.detail, ','), ", ") + "]";
        } else if (!r.detail.empty()) {
            o += ", \"why\": ";
            json_str(o, r.detail);
        }
        o += ", \"steps\": [";
        for (std::size_t k = 0; k < r.steps.size(); ++k) {
            const auto& st = r.steps[k];
            o += k ? ", {" : "{";
            o += "\"instance\": ";
            json_str(o, st.instance);
            o += ", \"state\": ";
            json_str(o, st.state);
            if (!st.receipt.empty()) {
                o += ", \"receipt\": ";
                json_str(o, st.receipt);
            }
            if (st.at) {
                o += ", \"at\": ";
                json_time(o, st.at);
            }
            if (!st.waiting.empty()) {
                o += ", \"waiting\": ";
                json_str(o, st.waiting);
                o += st.overdue ? ", \"overdue\": true" : ", \"overdue\": false";
            }
            o += "}";
        }
        o += "]}";
    }
    o += "\n]}\n";
    return o;
}

std::string erasure_text(const ErasureStatus& s) {
    std::string o = "erasure " + std::to_string(s.id) + ", asked by " + s.requested_by + " at " +
                    sb::detail::format_time(s.requested_at) + ": ";
    if (!s.done_at) {
        o += "not carried out yet (the node does it within seconds when it runs)\n";
    } else {
        o += "carried out at " + sb::detail::format_time(s.done_at) + "; " + std::to_string(s.settled) +
             " erase step(s) settled, " + std::to_string(s.outstanding) + " outstanding" +
             (s.complete() ? " - complete\n" : "\n");
    }
    for (const auto& r : s.records) {
        o += "  " + r.record_id + "  " + (r.outcome.empty() ? "pending" : r.outcome);
        if (r.outcome == "erased") o += " from the store";
        else if (r.outcome == "held") o += ": kept by hold(s) " + r.detail + "; erase it again when they end";
        else if (!r.detail.empty()) o += ": " + r.detail;
        o += "\n";
        for (const auto& st : r.steps) {
            o += "    " + st.instance + ": " + st.state;
            if (st.at) o += " at " + sb::detail::format_time(st.at);
            if (!st.receipt.empty()) o += ", receipt: " + st.receipt;
            if (!st.waiting.empty()) o += " (" + st.waiting + ")" + (st.overdue ? " OVERDUE" : "");
            o += "\n";
        }
    }
    return o;
}

} // namespace switchboard::governance
