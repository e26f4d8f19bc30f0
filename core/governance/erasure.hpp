#pragma once

// Erasure on request (UK GDPR Art. 17): a person's records erased ahead of
// the retention clock, through the same path as retention, everywhere they
// went: the store (records, attachments, outbox, dead letters), the vendor
// (the source's erase hook) and every department that received them (erase
// notices, confirmed by deletion receipts).
//
// `switchboard erase` and the admin API place an erasure straight into the
// journal's store (like a hold); the running node carries it out within a
// second or so (RetentionService::carry_out_erasures), because only the node
// writes the hash-chained audit trail and talks to the plugins. A record
// under a legal hold is not erased (outcome "held"): deleting data to avoid
// disclosing it is an offence (DPA 2018 s.173); erase it again once the
// hold has ended. The status of an erasure (`erase status`, GET
// /admin/v1/erasures/ID) is read back from the store and the audit trail:
// for each record, what each source and department confirmed (with its
// receipt) and what is still outstanding.

#include "store/store.hpp"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace switchboard::governance {

struct ErasureRequest {
    std::vector<std::string> records; // record ids (from a subject search or named)
    std::string by;                   // who asked; required
};

// Places the erasure; returns its id, or nullopt with `error` (no records,
// no name, a record id malformed or not in the store).
std::optional<std::int64_t> request_erasure(store::Store& store, const ErasureRequest& request, std::int64_t now,
                                            std::string& error);

// One erase step: an instance asked to erase one record.
struct EraseStep {
    std::string instance;
    std::string state;   // "confirmed", "not_found", "no_erase_hook", "failed_permanently", "outstanding"
    std::string receipt; // the deletion receipt, when the instance gave one
    std::int64_t at = 0; // when it settled (0: outstanding)
    std::string waiting; // outstanding: why (the task's last error)
    bool overdue = false; // outstanding past retention.receipt_deadline
};

struct ErasedRecord {
    std::string record_id;
    std::string outcome; // "" (not carried out yet), "erased", "held", "gone", "failed"
    std::string detail;  // held: the holds; gone/failed: why
    std::vector<EraseStep> steps;
};

struct ErasureStatus {
    std::int64_t id = 0;
    std::string requested_by;
    std::int64_t requested_at = 0, done_at = 0;
    std::vector<ErasedRecord> records;
    std::size_t settled = 0, outstanding = 0; // steps (settled: confirmed, or answered for good)
    // Everything there is to do is done: carried out, and no step outstanding.
    bool complete() const { return done_at != 0 && outstanding == 0; }
};

// Whether the erasure is carried out and no erase step of it is still open,
// from the store alone (cheap: for waiting; the audit entries of the last
// answers may still be on their way to the files, see erasure_status).
bool erasure_settled(store::Store& store, std::int64_t id);

// The erasure's status now; nullopt if there is no erasure with that id.
// Reads the audit trail (every file) for the answers: for a report, not
// for polling.
// `receipt_deadline_ms` marks overdue steps.
std::optional<ErasureStatus> erasure_status(store::Store& store, const std::filesystem::path& audit_dir,
                                            std::int64_t id, std::int64_t now, std::int64_t receipt_deadline_ms);

std::string erasure_json(const ErasureStatus& status);
// For a terminal: one line per record and per step.
std::string erasure_text(const ErasureStatus& status);

} // namespace switchboard::governance
