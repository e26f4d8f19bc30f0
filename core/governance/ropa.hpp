#pragma once

// The record of processing activities (UK GDPR Art. 30), generated from a
// validated config, its compiled policy and the plugins' descriptors, so it
// says what the node actually does rather than what someone remembered to
// write down. `switchboard ropa` writes it as Markdown and HTML; with --diff
// it compares two configs and says how the change alters who receives what.
//
// Nothing here reads a secret's value or any record: only names, paths,
// transforms, periods and the settings that decide transport security.

#include "config/config.hpp"
#include "pipeline/policy.hpp"

#include <string>
#include <vector>

namespace switchboard::governance {

// One field pattern of a profile, as a recipient receives it.
struct RopaField {
    std::string pattern;   // "citizen.address.*"
    std::string transform; // "keep", "mask:2", "generalise:postcode"
    bool special = false;  // can select special-category data by its path
};

// A [[route]]: a purpose for which a recipient receives a category of contact.
struct RopaRoute {
    std::string key;   // identity across configs: the name, else destination and categories
    std::string label; // name, or "route[N]"
    std::vector<std::string> categories, channels, sources; // empty channels/sources: all
    std::string destination;
    std::string purpose;
    std::string lawful_basis; // empty: none stated
    std::string profile;
    int profile_version = 1;
    std::string profile_description;
    std::vector<RopaField> fields;
};

// A source system or a recipient (destination instance).
struct RopaSystem {
    std::string name;        // instance name
    std::string description; // the instance's description in the config
    bool enabled = true;
    std::string plugin, plugin_version, vendor, plugin_description;
    bool plugin_known = false;                // its descriptor was available
    std::vector<std::string> channels;        // sources: the channels it records
    std::vector<std::string> data_categories; // emits (source) / accepts (destination)
    std::vector<std::string> data_subjects;   // sources: derived from its categories
    std::vector<std::string> retention;       // sources: the periods that apply
    bool erase_hook = false;
    std::string erase;     // what happens at expiry, in words
    std::string transport; // how data reaches it or leaves for it, in words
    std::string transfer;  // destinations: "" = none outside the UK
};

struct RopaMeasure {
    std::string measure;
    std::string detail;
};

struct Ropa {
    std::string node;
    std::string config_file;
    std::string generated_by; // "switchboard 0.1.0"
    std::vector<RopaSystem> sources;
    std::vector<RopaRoute> routes;
    std::vector<RopaSystem> recipients;
    std::string retention_default;
    std::vector<RopaMeasure> retention; // scope -> period, most specific first
    std::vector<RopaMeasure> security;
};

// Builds the record. `find` gives a plugin's descriptor by name (null when
// it is not loaded: the record then says so). `policy` must come from the
// same config without errors.
Ropa build_ropa(const config::Config& config, const pipeline::Policy& policy, const config::PluginLookup& find,
                const std::string& generated_by);

std::string ropa_markdown(const Ropa& ropa);
// A self-contained page: inline style, no script, no external asset; every
// configured text escaped.
std::string ropa_html(const Ropa& ropa);

// How a config change alters who receives what.
struct RopaChange {
    std::string kind;    // route_added, route_removed, route_changed, field_added, field_removed,
                         // transform_changed, retention_changed, recipient_added, recipient_removed,
                         // source_added, source_removed, transfer_changed, security_changed
    std::string subject; // the route, recipient ("revenues: contact.phone") or scope
    std::string before, after;
};

struct RopaDiff {
    std::string old_file, new_file;
    std::vector<RopaChange> changes;
    // "2 changes: 1 route added (bulky-waste), 1 field removed (revenues: contact.phone)",
    // or "no change to who receives what".
    std::string summary() const;
};

RopaDiff diff_ropa(const Ropa& before, const Ropa& after);
std::string diff_markdown(const RopaDiff& diff);
std::string diff_html(const RopaDiff& diff);

// The documented mapping from a data category to the categories of data
// subjects it is about ("staff.name" -> "council staff"); empty for
// categories about no person (classification hints, vendor ids).
std::string data_subject_of(std::string_view category);

// The channels a source plugin records, by plugin (documented in
// docs/governance.md); the jsonl source reads its `channel` key.
std::vector<std::string> channels_of(const config::InstanceConfig& source);

} // namespace switchboard::governance
