#include "util/text.hpp"

#include <charconv>
#include <cstdio>
#include <ctime>

namespace switchboard::text {

namespace {

bool read_number(std::string_view s, std::size_t& i, std::int64_t& out) {
    std::size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == start || i - start > 15) return false;
    std::from_chars(s.data() + start, s.data() + i, out);
    return true;
}

} // namespace

std::optional<std::int64_t> parse_duration(std::string_view s) {
    s = trim(s);
    if (s.empty()) return std::nullopt;
    std::int64_t total = 0;
    std::size_t i = 0;
    while (i < s.size()) {
        std::int64_t n = 0;
        if (!read_number(s, i, n)) return std::nullopt;
        std::size_t u = i;
        while (i < s.size() && s[i] >= 'a' && s[i] <= 'z') ++i;
        std::string_view unit = s.substr(u, i - u);
        std::int64_t mult;
        if (unit == "ms")
            mult = 1;
        else if (unit == "s")
            mult = 1000;
        else if (unit == "m")
            mult = 60'000;
        else if (unit == "h")
            mult = 3'600'000;
        else if (unit == "d")
            mult = 86'400'000;
        else
            return std::nullopt;
        if (n > (INT64_MAX / 2) / mult) return std::nullopt;
        total += n * mult;
        if (total > INT64_MAX / 4) return std::nullopt;
    }
    return total;
}

std::optional<std::int64_t> parse_size(std::string_view s) {
    s = trim(s);
    std::size_t i = 0;
    std::int64_t n = 0;
    if (!read_number(s, i, n)) return std::nullopt;
    std::string_view unit = trim(s.substr(i));
    std::int64_t mult;
    if (unit.empty() || unit == "B")
        mult = 1;
    else if (unit == "KiB")
        mult = 1024;
    else if (unit == "MiB")
        mult = 1024 * 1024;
    else if (unit == "GiB")
        mult = 1024LL * 1024 * 1024;
    else if (unit == "KB" || unit == "kB")
        mult = 1000;
    else if (unit == "MB")
        mult = 1'000'000;
    else if (unit == "GB")
        mult = 1'000'000'000;
    else
        return std::nullopt;
    if (n > INT64_MAX / mult) return std::nullopt;
    return n * mult;
}

std::string format_duration(std::int64_t ms) {
    if (ms == 0) return "0s";
    std::string out;
    if (ms < 0) {
        out = "-";
        ms = -ms;
    }
    struct Unit {
        std::int64_t size;
        const char* name;
    };
    static const Unit units[] = {
        {86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1000, "s"}, {1, "ms"}};
    for (const Unit& u : units) {
        if (ms >= u.size) {
            out += std::to_string(ms / u.size) + u.name;
            ms %= u.size;
        }
    }
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' ||
                          s.front() == '\n'))
        s.remove_prefix(1);
    while (!s.empty() &&
           (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
        s.remove_suffix(1);
    return s;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
    std::string out;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        if (i) out += sep;
        out += parts[i];
    }
    return out;
}

bool is_lower_hex(std::string_view s) {
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return !s.empty();
}

bool is_identifier(std::string_view s) {
    if (s.empty() || s.size() > 64) return false;
    auto ok_first = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    if (!ok_first(s[0])) return false;
    for (char c : s)
        if (!ok_first(c) && c != '_' && c != '-') return false;
    return true;
}

std::string format_time_ms(std::int64_t ms) {
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms % 1000));
    return buf;
}

} // namespace switchboard::text
