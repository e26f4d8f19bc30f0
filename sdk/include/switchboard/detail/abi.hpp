// Switchboard SDK: reading what a plugin declares, shared by the core and
// the test harness so that both accept and refuse exactly the same plugins,
// with the same messages, and read durations and sizes the same way.
// Header-only; not part of the ABI.
#pragma once

#include <switchboard/plugin.h>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace sb::detail {

// The integer in an enum field that a plugin filled in. A C plugin may store
// any int there, and loading one outside the enumerators' range as a C++ enum
// is undefined, so it is read as an integer first.
template <class E>
std::underlying_type_t<E> raw_enum(const E& e) {
    std::underlying_type_t<E> v;
    std::memcpy(&v, &e, sizeof v);
    return v;
}

inline std::string_view trim_space(std::string_view s) {
    while (!s.empty() && std::strchr(" \t\r\n", s.front())) s.remove_prefix(1);
    while (!s.empty() && std::strchr(" \t\r\n", s.back())) s.remove_suffix(1);
    return s;
}

// Reads up to 15 decimal digits at s[i].
inline bool read_decimal(std::string_view s, std::size_t& i, std::int64_t& out) {
    std::size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == start || i - start > 15) return false;
    std::from_chars(s.data() + start, s.data() + i, out);
    return true;
}

// Durations: "500ms", "30s", "5m", "12h", "28d", or a sum such as "1h30m".
// A unit is always required, so that "28" cannot mean 28 ms by accident.
// Returns milliseconds.
inline std::optional<std::int64_t> parse_duration(std::string_view s) {
    s = trim_space(s);
    if (s.empty()) return std::nullopt;
    std::int64_t total = 0;
    std::size_t i = 0;
    while (i < s.size()) {
        std::int64_t n = 0;
        if (!read_decimal(s, i, n)) return std::nullopt;
        std::size_t u = i;
        while (i < s.size() && s[i] >= 'a' && s[i] <= 'z') ++i;
        std::string_view unit = s.substr(u, i - u);
        std::int64_t mult = unit == "ms" ? 1
                            : unit == "s" ? 1000
                            : unit == "m" ? 60'000
                            : unit == "h" ? 3'600'000
                            : unit == "d" ? 86'400'000
                                          : 0;
        if (mult == 0 || n > (INT64_MAX / 2) / mult) return std::nullopt;
        total += n * mult;
        if (total > INT64_MAX / 4) return std::nullopt;
    }
    return total;
}

// Sizes: "512", "64KiB", "16MiB", "1GiB", "10KB", "5MB", "2GB". Returns bytes.
inline std::optional<std::int64_t> parse_size(std::string_view s) {
    s = trim_space(s);
    std::size_t i = 0;
    std::int64_t n = 0;
    if (!read_decimal(s, i, n)) return std::nullopt;
    std::string_view unit = trim_space(s.substr(i));
    std::int64_t mult = (unit.empty() || unit == "B") ? 1
                        : unit == "KiB"                ? 1024
                        : unit == "MiB"                ? 1024 * 1024
                        : unit == "GiB"                ? 1024LL * 1024 * 1024
                        : (unit == "KB" || unit == "kB") ? 1000
                        : unit == "MB"                 ? 1'000'000
                        : unit == "GB"                 ? 1'000'000'000
                                                       : 0;
    if (mult == 0 || n > INT64_MAX / mult) return std::nullopt;
    return n * mult;
}

// Unix milliseconds as RFC 3339 UTC with milliseconds: "2025-01-06T09:00:00.000Z".
inline std::string format_time(std::int64_t ms) {
    // Civil-from-days (Howard Hinnant's algorithm): no locale, no time zone.
    std::int64_t days = ms >= 0 ? ms / 86'400'000 : -((-ms + 86'399'999) / 86'400'000);
    std::int64_t rem = ms - days * 86'400'000;
    days += 719468;
    std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    std::int64_t doe = days - era * 146097;
    std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    std::int64_t mp = (5 * doy + 2) / 153;
    std::int64_t d = doy - (153 * mp + 2) / 5 + 1;
    std::int64_t m = mp < 10 ? mp + 3 : mp - 9;
    std::int64_t y = yoe + era * 400 + (m <= 2);
    if (y >= 0 && y <= 9999) {
        // Written digit by digit: the same text as the snprintf below, which
        // cost more than the rest of a record's envelope.
        char out[25] = "0000-00-00T00:00:00.000Z";
        auto put = [&](std::size_t at, std::int64_t v, int digits) {
            for (int k = digits - 1; k >= 0; --k, v /= 10) out[at + static_cast<std::size_t>(k)] = static_cast<char>('0' + v % 10);
        };
        put(0, y, 4);
        put(5, m, 2);
        put(8, d, 2);
        put(11, rem / 3'600'000, 2);
        put(14, rem / 60'000 % 60, 2);
        put(17, rem / 1000 % 60, 2);
        put(20, rem % 1000, 3);
        return std::string(out, 24);
    }
    char buf[160]; // generous: the compiler cannot see the fields' ranges
    std::snprintf(buf, sizeof buf, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%03lldZ",
                  static_cast<long long>(y), static_cast<long long>(m), static_cast<long long>(d),
                  static_cast<long long>(rem / 3'600'000), static_cast<long long>(rem / 60'000 % 60),
                  static_cast<long long>(rem / 1000 % 60), static_cast<long long>(rem % 1000));
    return buf;
}

// RFC 3339 date-time -> Unix milliseconds (offsets applied, fractions beyond
// milliseconds dropped); nullopt if malformed. The inverse of format_time.
inline std::optional<std::int64_t> parse_time(std::string_view s) {
    auto num = [&](std::size_t at, std::size_t n, std::int64_t& out) {
        if (at + n > s.size()) return false;
        out = 0;
        for (std::size_t k = at; k < at + n; ++k) {
            if (s[k] < '0' || s[k] > '9') return false;
            out = out * 10 + (s[k] - '0');
        }
        return true;
    };
    std::int64_t y, mo, d, h, mi, sec;
    if (!(s.size() >= 20 && num(0, 4, y) && s[4] == '-' && num(5, 2, mo) && s[7] == '-' &&
          num(8, 2, d) && (s[10] == 'T' || s[10] == 't') && num(11, 2, h) && s[13] == ':' &&
          num(14, 2, mi) && s[16] == ':' && num(17, 2, sec)))
        return std::nullopt;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return std::nullopt;
    std::size_t i = 19;
    std::int64_t ms = 0;
    if (i < s.size() && s[i] == '.') {
        ++i;
        std::size_t start = i;
        std::int64_t scale = 100;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
            if (scale > 0) ms += (s[i] - '0') * scale;
            scale /= 10;
            ++i;
        }
        if (i == start) return std::nullopt;
    }
    std::int64_t offset_min = 0;
    if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
        if (i + 1 != s.size()) return std::nullopt;
    } else {
        std::int64_t oh, om;
        if (!(i + 6 == s.size() && (s[i] == '+' || s[i] == '-') && num(i + 1, 2, oh) &&
              s[i + 3] == ':' && num(i + 4, 2, om) && oh <= 23 && om <= 59))
            return std::nullopt;
        offset_min = (s[i] == '+' ? 1 : -1) * (oh * 60 + om);
    }
    // Days from civil (Howard Hinnant's algorithm).
    std::int64_t yy = y - (mo <= 2);
    std::int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    std::int64_t yoe = yy - era * 400;
    std::int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    std::int64_t days = era * 146097 + doe - 719468;
    return ((days * 24 + h) * 60 + mi - offset_min) * 60'000 + sec * 1000 + ms;
}

// Names of plugins, instances and profiles: [a-z0-9][a-z0-9_-]*, 64 at most.
inline bool is_name(std::string_view s) {
    if (s.empty() || s.size() > 64) return false;
    auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    if (!alnum(s[0])) return false;
    for (char c : s)
        if (!alnum(c) && c != '_' && c != '-') return false;
    return true;
}

inline bool is_config_key(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    return true;
}

// Size of sb_plugin_descriptor as published at each minor of the current
// major. A plugin built for minor m must stamp at least this much.
inline std::size_t descriptor_size_for_minor(unsigned minor) {
    // Minors 0 to 4 (1.1, 1.2 and 1.3 grew the host table, 1.4 added a
    // capability bit: none grew the descriptor).
    static const std::size_t sizes[] = {sizeof(sb_plugin_descriptor), sizeof(sb_plugin_descriptor),
                                        sizeof(sb_plugin_descriptor), sizeof(sb_plugin_descriptor),
                                        sizeof(sb_plugin_descriptor)}; // append, never change
    constexpr unsigned known = sizeof(sizes) / sizeof(sizes[0]);
    static_assert(known == SB_ABI_MINOR + 1, "add the new minor's descriptor size");
    return minor < known ? sizes[minor] : sizeof(sb_plugin_descriptor);
}

// A plugin's descriptor as this host reads it: a copy in the host's own
// layout (fields the plugin's older struct lacks read as zero), with the
// config table copied element by element using the plugin's own element
// size (config_fields[0].struct_size), so that older, smaller tables read
// correctly. `descriptor.config_fields` points into `fields`.
struct Descriptor {
    sb_plugin_descriptor descriptor{};
    std::vector<sb_config_field> fields;

    Descriptor() = default;
    Descriptor(const Descriptor& o) : descriptor(o.descriptor), fields(o.fields) { relink(); }
    Descriptor& operator=(const Descriptor& o) {
        descriptor = o.descriptor;
        fields = o.fields;
        relink();
        return *this;
    }
    void relink() { descriptor.config_fields = fields.empty() ? nullptr : fields.data(); }
};

// Checks a descriptor and copies it into `out`. Returns "" when acceptable,
// otherwise the reason, saying what was expected and what was found. Defaults
// are checked against their own schema by the caller (the core with its TOML
// reader, the harness with its own).
inline std::string read_descriptor(const sb_plugin_descriptor* d, Descriptor& out) {
    if (!d) return "entry point returned no descriptor";
    // Only struct_size and the version are read before the version is known.
    constexpr std::size_t header = offsetof(sb_plugin_descriptor, abi_minor) + sizeof(uint16_t);
    if (d->struct_size < header)
        return "descriptor is " + std::to_string(d->struct_size) + " bytes, too small to hold a version";
    if (d->abi_major != SB_ABI_MAJOR)
        return "expected plugin ABI major " + std::to_string(SB_ABI_MAJOR) + ", found " +
               std::to_string(d->abi_major) + " (rebuild the plugin against this SDK)";
    if (d->abi_minor > SB_ABI_MINOR)
        return "expected plugin ABI minor " + std::to_string(SB_ABI_MINOR) + " or older, found " +
               std::to_string(d->abi_minor) + " (the plugin needs a newer Switchboard)";
    std::size_t want = descriptor_size_for_minor(d->abi_minor);
    if (d->struct_size < want)
        return "expected a descriptor of at least " + std::to_string(want) + " bytes for ABI " +
               std::to_string(d->abi_major) + "." + std::to_string(d->abi_minor) + ", found " +
               std::to_string(d->struct_size) + " bytes";
    out = Descriptor();
    std::memcpy(&out.descriptor, d, std::min<std::size_t>(d->struct_size, sizeof out.descriptor));
    const sb_plugin_descriptor& c = out.descriptor;
    if (!c.name || !is_name(c.name))
        return "expected a plugin name of lowercase letters, digits, '-' and '_', found " +
               std::string(c.name ? "\"" + std::string(c.name).substr(0, 64) + "\"" : "none");
    if (!c.version || !*c.version) return "expected a version string, found none";
    auto kind = raw_enum(c.kind);
    if (kind != SB_KIND_SOURCE && kind != SB_KIND_DESTINATION && kind != SB_KIND_TRANSFORM)
        return "expected kind source, destination or transform, found " + std::to_string(kind);
    if (!c.create || !c.destroy) return "expected create and destroy functions, found none";
    if (kind == SB_KIND_DESTINATION && !c.deliver)
        return "destination plugin has no deliver function";
    if (kind == SB_KIND_TRANSFORM && !c.transform)
        return "transform plugin has no transform function";
    if ((c.capabilities & SB_CAP_ERASE) && !c.erase)
        return "declares the erase capability but has no erase function";
    if (c.n_config_fields > 1024) return "declares more than 1024 config fields";
    if (c.n_config_fields && !c.config_fields) return "declares config fields but no table";
    std::size_t stride = c.n_config_fields ? c.config_fields[0].struct_size : 0;
    if (c.n_config_fields && stride < offsetof(sb_config_field, description) + sizeof(const char*))
        return "expected config fields of at least " +
               std::to_string(offsetof(sb_config_field, description) + sizeof(const char*)) +
               " bytes, found " + std::to_string(stride);
    const auto* base = reinterpret_cast<const unsigned char*>(c.config_fields);
    std::set<std::string, std::less<>> keys;
    for (std::size_t i = 0; i < c.n_config_fields; ++i) {
        sb_config_field f{};
        std::memcpy(&f, base + i * stride, std::min(stride, sizeof f));
        f.struct_size = sizeof f;
        std::string key = f.key ? f.key : "";
        if (!is_config_key(key))
            return "config field " + std::to_string(i) + ": expected a key of letters, digits, '-' "
                   "and '_', found \"" + key.substr(0, 64) + "\"";
        if (!keys.insert(key).second) return "config key '" + key + "' is declared twice";
        auto type = raw_enum(f.type);
        if (type < SB_CFG_STRING || type > SB_CFG_SIZE)
            return "config key '" + key + "' has unknown type " + std::to_string(type);
        if ((f.flags & SB_CFG_SECRET) && type != SB_CFG_STRING)
            return "config key '" + key + "' is secret but not a string";
        if ((f.flags & SB_CFG_REQUIRED) && f.default_value)
            return "config key '" + key + "' is required and has a default";
        out.fields.push_back(f);
    }
    out.relink();
    return {};
}

// Copies a host-side struct into a caller's out-parameter that may be older
// (smaller): only the bytes the caller's struct_size covers are written.
template <class T>
void copy_out(const T& full, T* out) {
    std::uint32_t size = out->struct_size;
    if (size == 0 || size > sizeof(T)) size = sizeof(T); // unset or newer: ours
    std::memcpy(out, &full, size);
    out->struct_size = size;
}

} // namespace sb::detail
