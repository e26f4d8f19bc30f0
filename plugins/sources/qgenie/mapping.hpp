// Q Genie (MODELLED): THE mapping from the vendor's data to the normalised
// record (docs/records.md). No public Q Genie interface exists; the column
// and key names below are Switchboard's model (see ../../../../shared/vendors.md
// §3.3 and the qgenie_MODELLED_* fixtures). When the vendor's data
// dictionary arrives, this table is the one place to change: the reader code
// never names a vendor column or key.
#pragma once

#include <string_view>

namespace qgenie {

enum class Format { csv, json };

// How a vendor value becomes a field value.
enum class Transform {
    text,        // as given (numbers as their text); empty values are left out
    london_time, // CSV: dd/mm/yyyy[ HH:MM[:SS]] Europe/London -> RFC 3339 with offset
    rfc3339,     // JSON: an RFC 3339 date-time, checked and kept as given
    boolean,     // JSON true/false (also "true"/"false", "yes"/"no", "1"/"0")
    list,        // CSV: "a;b" (';' or '|' separated) -> one field per item, at [*]
    ignore,      // known and deliberately not ingested (not reported as unmapped)
};

// The envelope value a mapped value also provides.
enum class Meta { none, external_id, occurred_at };

struct Mapping {
    Format format;
    // CSV: the header's column name (compared case-insensitively, spaces
    // trimmed). JSON: the key path within one visit, array indexes as [*].
    std::string_view key;
    // The record field; [*] takes the index of the vendor's array element
    // (or list item).
    std::string_view path;
    const char* category;
    Transform transform;
    Meta meta = Meta::none;
    bool required = false; // a visit without it is quarantined
};

// clang-format off
inline constexpr Mapping kMapping[] = {
    // --- nightly CSV export (MODELLED: fixtures/queue/qgenie_MODELLED_daily_export.csv)
    {Format::csv, "VisitId",      "vendor.visit_id",          "vendor.id",           Transform::text,        Meta::external_id, true},
    {Format::csv, "Ticket",       "visit.ticket",             "operational.visit",   Transform::text},
    {Format::csv, "Branch",       "visit.branch",             "operational.visit",   Transform::text},
    {Format::csv, "Service",      "hints.service",            "classification.hint", Transform::text},
    {Format::csv, "Status",       "visit.status",             "operational.visit",   Transform::text},
    {Format::csv, "Issued",       "visit.issued_at",          "operational.visit",   Transform::london_time, Meta::occurred_at},
    {Format::csv, "Called",       "visit.called_at",          "operational.visit",   Transform::london_time},
    {Format::csv, "Served",       "visit.served_at",          "operational.visit",   Transform::london_time},
    {Format::csv, "Completed",    "visit.completed_at",       "operational.visit",   Transform::london_time},
    {Format::csv, "ServedBy",     "agent.name",               "staff.name",          Transform::text},
    {Format::csv, "CustomerName", "citizen.name",             "identity.name",       Transform::text},
    {Format::csv, "Address",      "citizen.address.line1",    "contact.address",     Transform::text},
    {Format::csv, "Postcode",     "citizen.address.postcode", "contact.postcode",    Transform::text},
    {Format::csv, "Phone",        "contact.phone",            "contact.phone",       Transform::text},
    {Format::csv, "Email",        "contact.email",            "contact.email",       Transform::text},
    {Format::csv, "Reason",       "content.text",             "content.free_text",   Transform::text},
    {Format::csv, "ReceiptNos",   "evidence[*].receipt",      "reference.evidence",  Transform::list},

    // --- one visit record as JSON (MODELLED: fixtures/queue/qgenie_MODELLED_visit_*.json)
    {Format::json, "_note",                           "",                          nullptr,               Transform::ignore},
    {Format::json, "visit_id",                        "vendor.visit_id",           "vendor.id",           Transform::text,    Meta::external_id, true},
    {Format::json, "ticket_number",                   "visit.ticket",              "operational.visit",   Transform::text},
    {Format::json, "branch.id",                       "visit.branch_id",           "operational.visit",   Transform::text},
    {Format::json, "branch.name",                     "visit.branch",              "operational.visit",   Transform::text},
    {Format::json, "service.id",                      "hints.service_id",          "classification.hint", Transform::text},
    {Format::json, "service.name",                    "hints.service",             "classification.hint", Transform::text},
    {Format::json, "service_point.id",                "visit.service_point_id",    "operational.visit",   Transform::text},
    {Format::json, "service_point.name",              "visit.service_point",       "operational.visit",   Transform::text},
    {Format::json, "status",                          "visit.status",              "operational.visit",   Transform::text},
    {Format::json, "ticket_issued_at",                "visit.issued_at",           "operational.visit",   Transform::rfc3339, Meta::occurred_at},
    {Format::json, "called_at",                       "visit.called_at",           "operational.visit",   Transform::rfc3339},
    {Format::json, "served_at",                       "visit.served_at",           "operational.visit",   Transform::rfc3339},
    {Format::json, "completed_at",                    "visit.completed_at",        "operational.visit",   Transform::rfc3339},
    {Format::json, "served_by.staff_id",              "agent.id",                  "staff.id",            Transform::text},
    {Format::json, "served_by.display_name",          "agent.name",                "staff.name",          Transform::text},
    {Format::json, "customer.name",                   "citizen.name",              "identity.name",       Transform::text},
    {Format::json, "customer.address.line1",          "citizen.address.line1",     "contact.address",     Transform::text},
    {Format::json, "customer.address.line2",          "citizen.address.line2",     "contact.address",     Transform::text},
    {Format::json, "customer.address.line3",          "citizen.address.line3",     "contact.address",     Transform::text},
    {Format::json, "customer.address.town",           "citizen.address.town",      "contact.address",     Transform::text},
    {Format::json, "customer.address.postcode",       "citizen.address.postcode",  "contact.postcode",    Transform::text},
    {Format::json, "customer.phone",                  "contact.phone",             "contact.phone",       Transform::text},
    {Format::json, "customer.email",                  "contact.email",             "contact.email",       Transform::text},
    {Format::json, "visit_reason",                    "content.text",              "content.free_text",   Transform::text},
    {Format::json, "notes",                           "content.notes",             "content.free_text",   Transform::text},
    {Format::json, "evidence_receipts[*].receipt_no", "evidence[*].receipt",       "reference.evidence",  Transform::text},
    {Format::json, "evidence_receipts[*].item",       "evidence[*].item",          "reference.evidence",  Transform::text},
    {Format::json, "evidence_receipts[*].handed_in_at", "evidence[*].handed_in",   "reference.evidence",  Transform::rfc3339},
    {Format::json, "evidence_receipts[*].returned",   "evidence[*].returned",      "reference.evidence",  Transform::boolean},
};
// clang-format on

// The channel of every record (docs/records.md).
inline constexpr const char* kChannel = "visit";

// The data categories the table can produce (the descriptor declares them).
inline constexpr const char* kCategories[] = {
    "vendor.id",       "operational.visit", "classification.hint", "staff.id",
    "staff.name",      "identity.name",     "contact.address",     "contact.postcode",
    "contact.phone",   "contact.email",     "content.free_text",   "reference.evidence",
};

} // namespace qgenie
