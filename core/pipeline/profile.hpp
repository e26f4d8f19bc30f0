#pragma once

// Proportionality profiles: what one destination may receive of a record,
// and how each field is transformed. Default deny: a leaf or attachment no
// pattern names is dropped, and a special-category leaf (UK GDPR Art. 9,
// category "special.*") is dropped unless the route has a lawful basis,
// whatever the profile says.
//
// Compiled once from [profiles.NAME]; apply() runs per record per
// destination (up to ~150k/s): patterns are indexed by their first key so a
// leaf is tested against a few candidates, already in order of specificity.

#include "config/config.hpp"

#include <switchboard/detail/path_pattern.hpp>
#include <switchboard/detail/record_data.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::pipeline {

enum class Transform { Keep, Mask, Hash, Redact, GeneralisePostcode, GeneraliseMonth, GeneraliseAgeBand };

enum class Action { Kept, Masked, Hashed, Redacted, Generalised, Dropped };
const char* action_name(Action action); // "kept", "masked", ..., "dropped"

struct FieldRule {
    sb::detail::PathPattern pattern;
    Transform transform = Transform::Keep;
    int mask_keep = 4;          // mask: characters kept at the end
    std::string transform_text; // as written: "keep", "mask:2", "generalise:month"
};

// What happened to one input leaf or attachment, for explain and audits.
// Never holds a value.
struct FieldDecision {
    std::string path;      // canonical leaf path, or "attachments.NAME"
    std::string category;  // the leaf's data category
    Action action = Action::Dropped;
    std::string pattern;   // the profile pattern that decided; empty if none matched
    std::string transform; // transform text when sent ("mask:2"); empty when dropped
    std::string reason;    // "kept by profile revenues (citizen.name)"
};

class Profile {
public:
    // Compiles [profiles.NAME] (`table`). `hash_key` is the resolved secret,
    // or null when the profile has none (or it could not be resolved).
    // Reports a hash transform without a hash_key. Never throws for config
    // problems.
    static Profile compile(const std::string& name, const toml::table& table, const std::string* hash_key,
                           config::Diagnostics& out);

    const std::string& name() const { return name_; }
    int version() const { return version_; }
    const std::string& description() const { return description_; }
    const std::vector<FieldRule>& rules() const { return rules_; }

    // What makes apply() give what it gives, as 32 hex digits: the name,
    // version, rules and (a keyed digest of) the hash key. Two profiles with
    // the same fingerprint minimise every record the same way. Outbox
    // entries name their profile by it (see Journal), so that a copy made
    // again from the stored record is the copy that was routed and audited.
    const std::string& fingerprint() const { return fingerprint_; }
    // HMAC-SHA256(hash key, a fixed label) in hex, or empty without a key:
    // tells keys apart without revealing them.
    const std::string& key_fingerprint() const { return key_fingerprint_; }
    // The [profiles.NAME] table as configured (TOML text; the hash key as its
    // env:/file: reference, never the secret), kept by the journal so that
    // entries routed before a config change can still be made.
    const std::string& definition() const { return definition_; }
    // The resolved hash key, or null (for compiling a kept definition again
    // with the key of a configured profile that has the same one).
    const std::string* hash_key() const { return has_hash_key_ ? &hash_key_ : nullptr; }

    // The most specific rule whose pattern matches `path` (a canonical leaf
    // path or "attachments.NAME"), or null: default deny.
    const FieldRule* rule_for(std::string_view path) const;
    // The same for a leaf: remembered per interned path in a small per-thread
    // cache, as the same paths come back record after record.
    const FieldRule* rule_for(const sb::detail::Leaf& leaf) const;
    const FieldRule* rule_for(const sb::detail::PathAtom* path) const;

    // Whether a pattern can select special-category data by its path ("*",
    // "special.*", "special.x"), and which, for messages. (Any pattern may
    // meet a leaf whose category is special.*; apply() drops those without a
    // lawful basis at run time.)
    bool could_send_special() const { return !special_patterns_.empty(); }
    const std::vector<std::string>& special_patterns() const { return special_patterns_; }

    // Minimises `in` into `out` (which is reset): output meta is id, source,
    // channel, category, occurred_at, received_at, expires_at only (never the
    // vendor's external_id or subject_ref); leaves and attachments per the
    // rules above; categories carried over. `now_ms` (Unix ms) dates age
    // bands. `decisions`, when given, receives one entry per input leaf and
    // attachment, in record order; `summary`, when given, is set to the sent
    // paths and their transforms ("citizen.name:keep,contact.phone:mask"),
    // for the audit trail. Returns the number of leaves and attachments sent.
    std::size_t apply(const sb_record& in, sb_record& out, bool route_has_lawful_basis, std::int64_t now_ms,
                      std::vector<FieldDecision>* decisions = nullptr, std::string* summary = nullptr) const;

    // The summary of apply(), from its decisions.
    static std::string summarise(const std::vector<FieldDecision>& decisions);

    // What apply() would send, without making the copy: sets `summary` as
    // apply() sets it, and returns the shape id the copy would have (0 when
    // it would have none, or has attachments). The same decisions, leaf by
    // leaf: only the transforms that cannot fail (mask, redact, hash with a
    // key) are not computed. For a destination that will make its copy again
    // from the stored record anyway (its worker is behind).
    std::uint64_t sent_summary(const sb_record& in, bool route_has_lawful_basis, std::int64_t now_ms,
                               std::string& summary) const;

private:
    // Rules whose pattern starts with one literal key, plus the rules
    // starting with "*", by decreasing specificity (ties: table order).
    struct Group {
        std::string first_key;
        std::vector<std::uint32_t> rules;
    };
    const std::vector<std::uint32_t>& candidates(std::string_view path) const;
    // What this profile does with records of one shape (ABI 1.2: records of
    // one source mostly share a few), from this thread's memo of the last
    // shapes met; null when `record` has no shape.
    struct ShapeMemo {
        std::uint64_t profile = 0, shape = 0;
        std::vector<std::int32_t> rules; // per leaf: index in rules_, -1 for none
        std::size_t ruled = 0;           // how many have a rule: a copy's leaves, at most
        // The shape of the copies, when no value was dropped: their paths
        // and categories are then the same (RecordData::assume_shape).
        std::uint64_t copy_shape = 0;
        // apply()'s summary of those leaves, once made.
        std::string summary;
        bool summary_ready = false;
    };
    ShapeMemo* memo_of_shape(const sb::detail::RecordData& record) const;
    // `dry`: decide and summarise only; `out` gets the attachments and the
    // shape, not the leaves (sent_summary).
    std::size_t apply(const sb_record& in, sb_record& out, bool route_has_lawful_basis, std::int64_t now_ms,
                      std::vector<FieldDecision>* decisions, std::string* summary, bool memoised_summary,
                      bool dry) const;

    // Tells this profile's rules from another's in the per-thread cache of
    // rule_for(leaf): unique per compile() (copies share it, and their rules).
    std::uint64_t id_ = 0;
    std::string name_;
    int version_ = 1;
    std::string description_;
    std::string hash_key_;
    bool has_hash_key_ = false;
    std::vector<FieldRule> rules_;
    std::vector<Group> groups_;                 // sorted by first_key
    std::vector<std::uint32_t> wildcard_rules_; // "*" only: for leaves of no group
    std::vector<std::string> special_patterns_;
    std::string fingerprint_, key_fingerprint_, definition_;
};

} // namespace switchboard::pipeline
