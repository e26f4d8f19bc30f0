#include "util/text.hpp"

#include <switchboard/detail/abi.hpp>

#include <charconv>
#include <cstdio>
#include <ctime>

namespace switchboard::text {

std::optional<std::int64_t> parse_duration(std::string_view s) { return sb::detail::parse_duration(s); }

std::optional<std::int64_t> parse_size(std::string_view s) { return sb::detail::parse_size(s); }

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

std::vector<std::string> split(std::string_view s, char sep) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < s.size()) {
        auto end = s.find(sep, start);
        if (end == std::string_view::npos) end = s.size();
        if (end > start) out.emplace_back(s.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

bool is_lower_hex(std::string_view s) {
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return !s.empty();
}

bool is_identifier(std::string_view s) { return sb::detail::is_name(s); }

std::string format_time_ms(std::int64_t ms) { return sb::detail::format_time(ms); }

} // namespace switchboard::text
