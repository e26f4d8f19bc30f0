#pragma once

// A small declarative schema for TOML configuration, used for the core's own
// sections and, converted from sb_config_field tables, for every plugin
// instance's section. Validation never stops at the first problem: it
// collects every diagnostic, each naming file:line:column and the key path.

#include <switchboard/plugin.h>

#include <toml++/toml.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace switchboard::config {

struct Location {
    std::string file;
    int line = 0;
    int column = 0;
};

Location location_of(const toml::source_region& src);
inline Location location_of(const toml::node& n) { return location_of(n.source()); }
inline Location location_of(const toml::key& k) { return location_of(k.source()); }

struct Diagnostic {
    Location where;
    std::string key;     // dotted key path, e.g. "sources.web.config.token"
    std::string message; // never contains a secret's value
    bool warning = false;

    // "file:line:column: key: message" (warnings say "warning: ").
    std::string str() const;
};

class Diagnostics {
public:
    void error(Location where, std::string key, std::string message);
    void warn(Location where, std::string key, std::string message);
    const std::vector<Diagnostic>& all() const { return items_; }
    std::size_t error_count() const;
    bool has_errors() const { return error_count() > 0; }
    // Orders by file, line and column so output reads top to bottom.
    void sort();

private:
    std::vector<Diagnostic> items_;
};

enum class Kind { String, Integer, Float, Bool, Duration, Size, Path, Table, Array, Any };

struct Spec;
using SpecPtr = std::shared_ptr<const Spec>;
using Check = std::function<void(const toml::node&, const std::string& path, Diagnostics&)>;

struct Spec {
    Kind kind = Kind::Any;
    bool required = false;
    bool secret = false;
    bool multi = false; // plugin schemas: an array of `kind`
    std::optional<double> min, max; // numbers; durations in ms; sizes in bytes; arrays: length
    std::vector<std::string> choices;
    std::string description;
    std::optional<std::string> default_text; // TOML literal, shown in docs and applied by readers

    // Tables: known keys in order, or any key (validated with `any_value`).
    std::vector<std::pair<std::string, SpecPtr>> fields;
    SpecPtr any_value;
    std::string any_key_label;                   // "instance name", "plugin file"
    std::function<bool(std::string_view)> any_key_ok; // name rule for dynamic keys
    std::string any_key_rule;                    // explains the rule in errors
    bool opaque = false; // a table validated elsewhere (a plugin's own section)

    // Arrays (kind Array): every element.
    SpecPtr element;
    // Also accept a single value where an array is expected ("a" for ["a"]).
    bool scalar_as_array = false;

    // Extra checks after the type is right.
    std::vector<Check> checks;
};

// Fluent construction: S::table().field("a", S::string().required()).
class S {
public:
    static S string() { return S(Kind::String); }
    static S integer() { return S(Kind::Integer); }
    static S number() { return S(Kind::Float); }
    static S boolean() { return S(Kind::Bool); }
    static S duration() { return S(Kind::Duration); }
    static S size() { return S(Kind::Size); }
    static S path() { return S(Kind::Path); }
    static S table() { return S(Kind::Table); }
    static S array(S element) {
        S s(Kind::Array);
        s.spec_->element = element.build();
        return s;
    }

    S& required() { spec_->required = true; return *this; }
    S& secret() { spec_->secret = true; return *this; }
    S& min(double v) { spec_->min = v; return *this; }
    S& max(double v) { spec_->max = v; return *this; }
    S& choices(std::vector<std::string> c) { spec_->choices = std::move(c); return *this; }
    S& describe(std::string d) { spec_->description = std::move(d); return *this; }
    S& fallback(std::string toml_literal) { spec_->default_text = std::move(toml_literal); return *this; }
    S& field(std::string key, const S& s) {
        spec_->fields.emplace_back(std::move(key), s.build());
        return *this;
    }
    S& any(std::string label, const S& value, std::function<bool(std::string_view)> key_ok = {},
           std::string rule = {}) {
        spec_->any_key_label = std::move(label);
        spec_->any_value = value.build();
        spec_->any_key_ok = std::move(key_ok);
        spec_->any_key_rule = std::move(rule);
        return *this;
    }
    S& opaque() { spec_->opaque = true; return *this; }
    S& or_scalar() { spec_->scalar_as_array = true; return *this; }
    S& check(Check c) { spec_->checks.push_back(std::move(c)); return *this; }

    SpecPtr build() const { return spec_; }

private:
    explicit S(Kind k) : spec_(std::make_shared<Spec>()) { spec_->kind = k; }
    std::shared_ptr<Spec> spec_;
};

// Validates `node` (found at `path`) against `spec`. `parent` locates
// "missing key" errors when a required key is absent.
void validate(const toml::node& node, const Spec& spec, const std::string& path, Diagnostics& out);

// Validates a table's keys against a table spec (used for the root).
void validate_table(const toml::table& table, const Spec& spec, const std::string& path,
                    Diagnostics& out);

// "string", "integer", "table"...: the TOML type of a node, for messages.
const char* type_name(const toml::node& n);
// What a spec expects, for messages: "a duration such as \"30s\"".
std::string expected_text(const Spec& spec);

// Converts a plugin's declared schema into a Spec for its config table.
// Problems in the descriptor itself (a default that does not parse, an
// unknown type) are returned as messages.
SpecPtr spec_from_plugin(const sb_config_field* fields, std::size_t n,
                         std::vector<std::string>& problems);

// Parses a TOML literal ("30s" with quotes, 5, true, ["a"]) into a node.
std::optional<toml::table> parse_literal(const std::string& literal);

// A secret reference: "env:NAME" or "file:PATH".
bool is_secret_reference(std::string_view value);

std::string join_path(const std::string& parent, std::string_view key);

} // namespace switchboard::config
