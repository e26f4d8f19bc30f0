#pragma once

// Subject access (UK GDPR Art. 15): finds every record held about a person
// and what became of it, and writes it out as a JSON bundle and a readable,
// self-contained HTML report.
//
// Matching rule: a record is the person's when one of its fields matches a
// STRONG identifier given (phone, e-mail, NINO, Landbot customer id, a
// council reference), or when BOTH the name and the postcode given match
// fields of the same record. A name alone, or a postcode alone, never
// includes a record: many people share them. Identifiers are compared in
// normal form (governance/identifiers.hpp) and by data category, whatever
// the field's path (docs/records.md), so every source's records are found.
// Identifiers inside free text are not searched.
//
// Cost: a scan of every stored chunk (each record decoded), plus a read of
// the audit files for the records found: about proportional to what the
// node holds (28 days of contacts). Fine for the occasional request; an
// index of normalised identifiers would make it a lookup.

#include "audit/audit_log.hpp"
#include "store/store.hpp"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::governance {

struct SubjectQuery {
    std::string name, postcode, phone, email, nino, landbot_id, reference;

    // How normalise() names an identifier in its errors: as the command's
    // option ("--landbot-id") or as the admin API's JSON key ("landbot_id",
    // after `within`, e.g. "subject.landbot_id").
    enum class Naming { cli_options, json_keys };

    // Puts every given identifier in normal form; false with `error` naming
    // the option (or key) when one is not what it says (a phone number with
    // letters, a malformed NINO), or when nothing usable was given (a name
    // needs a postcode).
    bool normalise(std::string& error, Naming naming = Naming::cli_options, std::string_view within = "");
    // The identifier a JSON key names ("landbot_id": &landbot_id), or nullptr.
    std::string* field(std::string_view json_key);
    static constexpr const char* kJsonKeys = "name, postcode, phone, email, nino, landbot_id, reference";
    // "phone, email": the kinds of identifier given.
    std::string kinds() const;
};

struct Disclosure {
    std::string destination, purpose, profile, lawful_basis, route;
    std::vector<std::pair<std::string, std::string>> fields; // path, transform
    std::uint64_t seq = 0;         // the destination's outbox seq (0: the entry had none)
    std::int64_t disclosed_at = 0;
    std::int64_t delivered_at = 0; // 0: not (yet) delivered
};

struct FoundRecord {
    std::string id, source, channel, category, external_id;
    std::int64_t received_at = 0, occurred_at = 0, expires_at = 0;
    std::vector<std::string> matched_on;                          // categories that matched
    std::vector<std::tuple<std::string, std::string, std::string>> fields; // path, category, value
    std::vector<std::string> withheld;                            // paths of third parties' data
    std::vector<std::pair<std::string, std::string>> attachments; // name, media type
    std::vector<Disclosure> disclosures;
    std::vector<std::int64_t> held_by;                            // holds in force on it
};

struct SarResult {
    std::string id;      // "SAR-<UTC time>"
    std::int64_t opened_at = 0;
    std::string query_kinds;
    std::vector<FoundRecord> records;
    std::uint64_t chunks_scanned = 0, records_scanned = 0, unreadable_chunks = 0;
    std::int64_t hold = 0; // the hold placed by --hold, 0 if none
};

// Scans the store for the subject (query normalised first) and reads the
// audit trail under `audit_dir` for what was disclosed to whom.
// Adds to `records` what the audit trail says of them (`entries` from
// AuditLog::read_records with their ids and the delivery runs): each
// disclosure (destination, purpose, profile, fields sent, seq) and when it
// was delivered, by its own `deliver` entry or by a run ("seqs=F-L") that
// covers its seq at that destination.
void apply_audit(std::vector<FoundRecord>& records, const std::vector<audit::Record>& entries);

SarResult find_subject(store::Store& store, const SubjectQuery& query,
                       const std::filesystem::path& audit_dir, std::int64_t now);

std::string sar_json(const SarResult& result);
std::string sar_html(const SarResult& result);

// "SAR-20261128T174012Z"
std::string sar_id(std::int64_t now);

// Holds what `result` found, as `sar --hold` and POST /admin/v1/sar with
// "hold" do: one hold set by `by`, reason "subject access request <id>", its
// `sar` the result's id, ended by `sar close`. Sets result.hold and each
// record's held_by. True, placing nothing, when nothing was found; false with
// `error` when the hold could not be placed (governance/holds.hpp).
bool hold_found(store::Store& store, SarResult& result, const std::string& by, std::int64_t now,
                std::string& error);

} // namespace switchboard::governance
