#include "config/schema.hpp"

#include "util/text.hpp"

#include <switchboard/detail/abi.hpp>

#include <algorithm>
#include <cmath>
#include <sstream>

namespace switchboard::config {

Location location_of(const toml::source_region& src) {
    Location loc;
    if (src.path) loc.file = *src.path;
    loc.line = static_cast<int>(src.begin.line);
    loc.column = static_cast<int>(src.begin.column);
    return loc;
}

std::string Diagnostic::str() const {
    std::ostringstream out;
    out << (where.file.empty() ? "<config>" : where.file);
    if (where.line > 0) out << ':' << where.line << ':' << where.column;
    out << ": ";
    if (warning) out << "warning: ";
    if (!key.empty()) out << key << ": ";
    out << message;
    return out.str();
}

void Diagnostics::error(Location where, std::string key, std::string message) {
    items_.push_back({std::move(where), std::move(key), std::move(message), false});
}

void Diagnostics::warn(Location where, std::string key, std::string message) {
    items_.push_back({std::move(where), std::move(key), std::move(message), true});
}

std::size_t Diagnostics::error_count() const {
    return static_cast<std::size_t>(
        std::count_if(items_.begin(), items_.end(), [](const Diagnostic& d) { return !d.warning; }));
}

void Diagnostics::sort() {
    std::stable_sort(items_.begin(), items_.end(), [](const Diagnostic& a, const Diagnostic& b) {
        return std::tie(a.where.file, a.where.line, a.where.column) <
               std::tie(b.where.file, b.where.line, b.where.column);
    });
}

std::string join_path(const std::string& parent, std::string_view key) {
    bool bare = !key.empty();
    for (char c : key)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            bare = false;
    std::string k = bare ? std::string(key) : "\"" + std::string(key) + "\"";
    return parent.empty() ? k : parent + "." + k;
}

const char* type_name(const toml::node& n) {
    switch (n.type()) {
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    default: return "nothing";
    }
}

namespace {
const char* noun(Kind k) {
    switch (k) {
    case Kind::String: return "string";
    case Kind::Integer: return "integer";
    case Kind::Float: return "number";
    case Kind::Bool: return "boolean";
    case Kind::Duration: return "duration";
    case Kind::Size: return "size";
    case Kind::Path: return "path";
    case Kind::Table: return "table";
    case Kind::Array: return "array";
    case Kind::Any: return "value";
    }
    return "value";
}
} // namespace

std::string expected_text(const Spec& spec) {
    switch (spec.kind) {
    case Kind::String: return spec.secret ? "a secret reference (\"env:NAME\" or \"file:PATH\")"
                                          : "a string";
    case Kind::Integer: return "an integer";
    case Kind::Float: return "a number";
    case Kind::Bool: return "true or false";
    case Kind::Duration: return "a duration such as \"500ms\", \"30s\", \"5m\", \"12h\" or \"28d\"";
    case Kind::Size: return "a size such as 65536, \"64KiB\" or \"16MiB\"";
    case Kind::Path: return "a path (string)";
    case Kind::Table: return "a table";
    case Kind::Array:
        return std::string("an array of ") + noun(spec.element->kind) + "s" +
               (spec.scalar_as_array ? " (or a single " + std::string(noun(spec.element->kind)) + ")"
                                     : "");
    case Kind::Any: return "a value";
    }
    return "a value";
}

namespace {

std::string format_number(double v) {
    if (std::floor(v) == v && std::fabs(v) < 1e15) return std::to_string(static_cast<long long>(v));
    std::ostringstream s;
    s << v;
    return s.str();
}

std::string format_bound(const Spec& spec, double v) {
    if (spec.kind == Kind::Duration) return text::format_duration(static_cast<std::int64_t>(v));
    if (spec.kind == Kind::Size) return format_number(v) + " bytes";
    return format_number(v);
}

void check_range(const toml::node& n, const Spec& spec, double value, const std::string& path,
                 Diagnostics& out) {
    if (spec.min && value < *spec.min)
        out.error(location_of(n), path, "must be at least " + format_bound(spec, *spec.min) +
                                            (spec.secret ? "" : " (found " + format_bound(spec, value) + ")"));
    else if (spec.max && value > *spec.max)
        out.error(location_of(n), path, "must be at most " + format_bound(spec, *spec.max) +
                                            (spec.secret ? "" : " (found " + format_bound(spec, value) + ")"));
}

// Levenshtein distance, for "did you mean" hints on unknown keys.
std::size_t distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j)
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

void type_error(const toml::node& n, const Spec& spec, const std::string& path, Diagnostics& out) {
    out.error(location_of(n), path,
              "expected " + expected_text(spec) + ", found " + type_name(n));
}

bool valid_env_name(std::string_view s) {
    if (s.empty()) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        if (!(alpha || (i > 0 && c >= '0' && c <= '9'))) return false;
    }
    return true;
}

void validate_string(const toml::node& n, const Spec& spec, const std::string& path,
                     Diagnostics& out) {
    const std::string& v = n.as_string()->get();
    if (spec.secret) {
        if (!is_secret_reference(v)) {
            // Never echo the value: it may be the secret itself.
            out.error(location_of(n), path,
                      "is a secret and must not be written in the file: use \"env:NAME\" or "
                      "\"file:PATH\"");
        } else if (v.rfind("env:", 0) == 0 && !valid_env_name(std::string_view(v).substr(4))) {
            out.error(location_of(n), path,
                      "\"env:\" must be followed by an environment variable name");
        } else if (v.rfind("file:", 0) == 0 && v.size() == 5) {
            out.error(location_of(n), path, "\"file:\" must be followed by a path");
        }
        return;
    }
    if (!spec.choices.empty() &&
        std::find(spec.choices.begin(), spec.choices.end(), v) == spec.choices.end()) {
        std::string shown = v.size() > 40 ? v.substr(0, 40) + "…" : v;
        out.error(location_of(n), path,
                  "must be one of: " + text::join(spec.choices, ", ") + " (found \"" + shown + "\")");
    }
    if (spec.kind == Kind::Path && v.empty()) out.error(location_of(n), path, "must not be empty");
}

} // namespace

bool is_secret_reference(std::string_view value) {
    return value.rfind("env:", 0) == 0 || value.rfind("file:", 0) == 0;
}

void validate(const toml::node& n, const Spec& spec, const std::string& path, Diagnostics& out) {
    switch (spec.kind) {
    case Kind::Table:
        if (!n.is_table()) return type_error(n, spec, path, out);
        if (!spec.opaque) validate_table(*n.as_table(), spec, path, out);
        break;
    case Kind::Array: {
        if (!n.is_array()) {
            if (spec.scalar_as_array && !n.is_table()) {
                validate(n, *spec.element, path, out);
                break;
            }
            return type_error(n, spec, path, out);
        }
        const toml::array& arr = *n.as_array();
        // For arrays of strings the bounds are on the length; for numbers
        // they are checked per element by the element spec.
        if (spec.min && static_cast<double>(arr.size()) < *spec.min)
            out.error(location_of(n), path,
                      "must have at least " + format_number(*spec.min) + " element(s)");
        if (spec.max && static_cast<double>(arr.size()) > *spec.max)
            out.error(location_of(n), path,
                      "must have at most " + format_number(*spec.max) + " element(s)");
        for (std::size_t i = 0; i < arr.size(); ++i)
            validate(arr[i], *spec.element, path + "[" + std::to_string(i) + "]", out);
        break;
    }
    case Kind::String:
    case Kind::Path:
        if (!n.is_string()) return type_error(n, spec, path, out);
        validate_string(n, spec, path, out);
        break;
    case Kind::Integer:
        if (!n.is_integer()) return type_error(n, spec, path, out);
        check_range(n, spec, static_cast<double>(n.as_integer()->get()), path, out);
        break;
    case Kind::Float:
        if (!n.is_number()) return type_error(n, spec, path, out);
        check_range(n, spec, n.is_integer() ? static_cast<double>(n.as_integer()->get())
                                            : n.as_floating_point()->get(),
                    path, out);
        break;
    case Kind::Bool:
        if (!n.is_boolean()) return type_error(n, spec, path, out);
        break;
    case Kind::Duration: {
        if (!n.is_string()) return type_error(n, spec, path, out);
        auto ms = text::parse_duration(n.as_string()->get());
        if (!ms) return type_error(n, spec, path, out);
        check_range(n, spec, static_cast<double>(*ms), path, out);
        break;
    }
    case Kind::Size: {
        std::optional<std::int64_t> bytes;
        if (n.is_integer() && n.as_integer()->get() >= 0)
            bytes = n.as_integer()->get();
        else if (n.is_string())
            bytes = text::parse_size(n.as_string()->get());
        if (!bytes) return type_error(n, spec, path, out);
        check_range(n, spec, static_cast<double>(*bytes), path, out);
        break;
    }
    case Kind::Any: break;
    }
    for (const Check& c : spec.checks) c(n, path, out);
}

void validate_table(const toml::table& table, const Spec& spec, const std::string& path,
                    Diagnostics& out) {
    for (auto&& [key, value] : table) {
        std::string child = join_path(path, key.str());
        auto it = std::find_if(spec.fields.begin(), spec.fields.end(),
                               [&](const auto& f) { return f.first == key.str(); });
        if (it != spec.fields.end()) {
            validate(value, *it->second, child, out);
            continue;
        }
        if (spec.any_value) {
            if (spec.any_key_ok && !spec.any_key_ok(key.str())) {
                out.error(location_of(key), child,
                          "is not a valid " + spec.any_key_label +
                              (spec.any_key_rule.empty() ? "" : ": " + spec.any_key_rule));
                continue;
            }
            validate(value, *spec.any_value, child, out);
            continue;
        }
        std::vector<std::string> valid;
        std::string hint;
        std::size_t best = 3;
        for (const auto& f : spec.fields) {
            valid.push_back(f.first);
            std::size_t d = distance(key.str(), f.first);
            if (d < best) {
                best = d;
                hint = f.first;
            }
        }
        std::string message = "unknown key";
        if (!hint.empty()) message += " (did you mean '" + hint + "'?)";
        message += valid.empty() ? "; this table takes no keys"
                                 : "; valid keys: " + text::join(valid, ", ");
        out.error(location_of(key), child, message);
    }
    for (const auto& [name, field] : spec.fields) {
        if (field->required && !table.contains(name))
            out.error(location_of(table), join_path(path, name),
                      "missing required key" +
                          (field->description.empty() ? "" : " (" + field->description + ")"));
    }
}

std::optional<toml::table> parse_literal(const std::string& literal) {
    try {
        return toml::parse("v = " + literal);
    } catch (const toml::parse_error&) {
        return std::nullopt;
    }
}

SpecPtr spec_from_plugin(const sb_config_field* fields, std::size_t n,
                         std::vector<std::string>& problems) {
    S table = S::table();
    for (std::size_t i = 0; i < n; ++i) {
        const sb_config_field& f = fields[i];
        // Keys, types and flags were checked by sb::detail::read_descriptor.
        std::string key = f.key ? f.key : "";
        S element = [&] {
            switch (sb::detail::raw_enum(f.type)) {
            case SB_CFG_STRING: return S::string();
            case SB_CFG_INT: return S::integer();
            case SB_CFG_FLOAT: return S::number();
            case SB_CFG_BOOL: return S::boolean();
            case SB_CFG_DURATION: return S::duration();
            case SB_CFG_PATH: return S::path();
            case SB_CFG_SIZE: return S::size();
            }
            problems.push_back("config field '" + key + "' has unknown type " +
                               std::to_string(static_cast<int>(f.type)));
            return S::string();
        }();
        bool multi = f.flags & SB_CFG_MULTI;
        bool numeric = f.type == SB_CFG_INT || f.type == SB_CFG_FLOAT ||
                       f.type == SB_CFG_DURATION || f.type == SB_CFG_SIZE;
        if (f.flags & SB_CFG_SECRET) element.secret();
        if (f.choices) {
            std::vector<std::string> c;
            for (const char* const* p = f.choices; *p; ++p) c.emplace_back(*p);
            element.choices(std::move(c));
        }
        S spec = multi ? S::array(element) : element;
        // Bounds: per element for numbers, on the length for other arrays.
        S& bounded = (multi && numeric) ? element : spec;
        if (f.flags & SB_CFG_HAS_MIN) bounded.min(f.min);
        if (f.flags & SB_CFG_HAS_MAX) bounded.max(f.max);
        if (multi && numeric) spec = S::array(element);
        if (f.flags & SB_CFG_REQUIRED) spec.required();
        if (f.description) spec.describe(f.description);
        if (f.default_value) {
            spec.fallback(f.default_value);
            auto parsed = parse_literal(f.default_value);
            if (!parsed || !parsed->contains("v")) {
                problems.push_back("config field '" + key + "' has a default that is not a TOML value");
            } else {
                Diagnostics d;
                validate(*parsed->get("v"), *spec.build(), key, d);
                for (const auto& item : d.all())
                    problems.push_back("config field '" + key + "' default: " + item.message);
            }
        }
        table.field(key, spec);
    }
    return table.build();
}

} // namespace switchboard::config
