#pragma once

// Legal holds: retention does not delete a held record until its hold ends
// (`hold end`, `sar close`, or its `until` date). Deleting data to avoid
// disclosing it is an offence (DPA 2018 s.173), so a subject access request
// holds what it found while it is answered.
//
// Holds are written straight into the journal's store, concurrently with a
// running node (SQLite's locking serialises the writes), and take effect at
// once: the sweeper's query skips held chunks. The audit entries (kind
// `hold`, one per record: action set / ended / expired) are written by the
// node at its next sweep (settle_holds), because only the node appends to
// the hash-chained trail. These functions are what the CLI calls, and what
// an admin API endpoint should call too.

#include "audit/audit_log.hpp"
#include "store/store.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace switchboard::governance {

struct HoldRequest {
    std::vector<std::string> records; // record ids
    std::string reason;               // required; kept in the store, never audited
    std::string by;                   // who set it; required
    std::int64_t until = 0;           // Unix ms; 0: until ended
    std::string sar;                  // the subject access request placing it, if any
};

// The chunk of each record id, in order, duplicates dropped; false with
// `error` naming the ids that are malformed or not in the store. Shared by
// holds and erasures.
bool resolve_records(store::Store& store, const std::vector<std::string>& ids, std::vector<std::string>& records,
                     std::vector<std::int64_t>& chunks, std::string& error);

// Places a hold; returns its id, or nullopt with `error` saying what is wrong
// (no records, a record id that is malformed or not in the store, no reason
// or name, an end date in the past).
std::optional<std::int64_t> place_hold(store::Store& store, const HoldRequest& request, std::int64_t now,
                                       std::string& error);

// Ends a hold in force; false with `error` if there is none with that id.
bool end_hold(store::Store& store, std::int64_t id, const std::string& by, std::int64_t now,
              std::string& error);

// Ends every hold in force placed by subject access request `sar`; returns
// how many.
std::size_t end_sar_holds(store::Store& store, const std::string& sar, const std::string& by, std::int64_t now);

// For the node, in a journal write: marks holds whose `until` has passed as
// expired, and appends the audit entries not yet written for any hold.
// Returns the number of holds whose entries were written.
// How long an ended hold stays listed (`hold list`) before it is forgotten;
// the audit trail keeps its account (ids, who, when), not its reason.
inline constexpr std::int64_t kEndedHoldKeptMs = 28LL * 86'400'000;

// Whether settle_holds has anything to do (so a sweep commits nothing when
// no hold changed).
bool holds_unsettled(store::Store& store, std::int64_t now);
// Also forgets holds ended more than kEndedHoldKeptMs before `now`.
std::size_t settle_holds(store::Store& store, store::Txn& txn, audit::AuditLog& audit, std::int64_t now);

// "in force", "ended" or "expired" (its `until` passed, whether or not the
// node has settled it yet): what `hold list` and GET /admin/v1/holds show.
const char* hold_state(const store::Hold& hold, std::int64_t now);

// "until 2027-01-31": YYYY-MM-DD (the hold lasts through that day, UTC) or an
// RFC 3339 time. nullopt if malformed.
std::optional<std::int64_t> parse_until(std::string_view text);

} // namespace switchboard::governance
