#include "governance/holds.hpp"

#include "pipeline/journal.hpp"

#include <switchboard/detail/abi.hpp>

#include <set>

namespace switchboard::governance {

namespace {

void audit_hold(audit::AuditLog& audit, std::int64_t now, const store::Hold& h, std::string_view action) {
    std::string detail;
    for (const auto& id : h.records) {
        detail.clear();
        audit::append_attr(detail, "action", action);
        audit::append_attr(detail, "hold", std::to_string(h.id));
        if (action == "set") {
            audit::append_attr(detail, "by", h.set_by);
            audit::append_attr(detail, "set_at", sb::detail::format_time(h.set_at));
            if (h.until) audit::append_attr(detail, "until", sb::detail::format_time(h.until));
            if (!h.sar.empty()) audit::append_attr(detail, "sar", h.sar);
        } else {
            audit::append_attr(detail, "by", h.ended_by);
            audit::append_attr(detail, "ended_at", sb::detail::format_time(h.ended_at));
        }
        audit.append(now, "hold", id, detail);
    }
}

} // namespace

bool resolve_records(store::Store& store, const std::vector<std::string>& ids, std::vector<std::string>& records,
                     std::vector<std::int64_t>& chunks, std::string& error) {
    std::set<std::string> seen;
    std::string missing;
    for (const auto& id : ids) {
        if (!seen.insert(id).second) continue;
        std::int64_t chunk = 0;
        std::uint32_t index = 0;
        std::optional<store::ChunkInfo> info;
        if (pipeline::parse_record_id(id, chunk, index)) info = store.chunk_info(chunk);
        if (!info || index >= info->count) {
            missing += (missing.empty() ? "" : ", ") + id;
            continue;
        }
        records.push_back(id);
        chunks.push_back(chunk);
    }
    if (missing.empty()) return true;
    error = "no record " + missing + " in the journal (malformed, or already deleted)";
    return false;
}

std::optional<std::int64_t> place_hold(store::Store& store, const HoldRequest& request, std::int64_t now,
                                       std::string& error) {
    if (request.records.empty()) {
        error = "no records to hold";
        return std::nullopt;
    }
    if (request.reason.empty()) {
        error = "a hold needs a reason";
        return std::nullopt;
    }
    if (request.by.empty()) {
        error = "a hold needs the name of who sets it";
        return std::nullopt;
    }
    if (request.until && request.until <= now) {
        error = "the hold's end date " + sb::detail::format_time(request.until) + " has passed";
        return std::nullopt;
    }
    store::Hold h;
    std::vector<std::int64_t> chunks;
    if (!resolve_records(store, request.records, h.records, chunks, error)) return std::nullopt;
    h.reason = request.reason;
    h.set_by = request.by;
    h.set_at = now;
    h.until = request.until;
    h.sar = request.sar;
    std::int64_t id = 0;
    store.write([&](store::Txn& t) { id = t.put_hold(h, chunks); });
    return id;
}

bool end_hold(store::Store& store, std::int64_t id, const std::string& by, std::int64_t now, std::string& error) {
    if (by.empty()) {
        error = "ending a hold needs the name of who ends it";
        return false;
    }
    bool ended = false;
    store.write([&](store::Txn& t) { ended = t.end_hold(id, now, by); });
    if (!ended) {
        auto h = store.hold(id);
        error = !h ? "no hold " + std::to_string(id)
                   : "hold " + std::to_string(id) + " already ended " + sb::detail::format_time(h->ended_at);
    }
    return ended;
}

std::size_t end_sar_holds(store::Store& store, const std::string& sar, const std::string& by, std::int64_t now) {
    std::size_t n = 0;
    store.write([&](store::Txn& t) {
        for (const auto& h : store.holds(std::nullopt))
            if (h.sar == sar && h.ended_at == 0 && t.end_hold(h.id, now, by)) ++n;
    });
    return n;
}

bool holds_unsettled(store::Store& store, std::int64_t now) {
    return store.holds_to_settle(now, now - kEndedHoldKeptMs);
}

std::size_t settle_holds(store::Store& store, store::Txn& txn, audit::AuditLog& audit, std::int64_t now) {
    std::size_t n = 0;
    for (auto& h : store.holds(std::nullopt)) {
        if (h.ended_at == 0 && h.until && h.until <= now) {
            txn.end_hold(h.id, h.until, "expiry");
            h.ended_at = h.until;
            h.ended_by = "expiry";
        }
        int want = h.ended_at ? 2 : 1;
        if (h.audited >= want) continue;
        if (h.audited < 1) audit_hold(audit, now, h, "set");
        if (want == 2) audit_hold(audit, now, h, h.ended_by == "expiry" ? "expired" : "ended");
        txn.set_hold_audited(h.id, want);
        ++n;
    }
    txn.purge_holds(now - kEndedHoldKeptMs);
    return n;
}

const char* hold_state(const store::Hold& h, std::int64_t now) {
    if (h.ended_at) return h.ended_by == "expiry" ? "expired" : "ended";
    if (h.until && h.until <= now) return "expired";
    return "in force";
}

std::optional<std::int64_t> parse_until(std::string_view text) {
    if (text.size() == 10 && text[4] == '-' && text[7] == '-') {
        auto t = sb::detail::parse_time(std::string(text) + "T00:00:00Z");
        if (!t) return std::nullopt;
        return *t + 86'400'000; // through that day
    }
    return sb::detail::parse_time(text);
}

} // namespace switchboard::governance
