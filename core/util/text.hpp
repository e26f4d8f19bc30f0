#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::text {

// "500ms", "30s", "5m", "12h", "28d", or a sum such as "1h30m". Returns
// milliseconds, or nullopt for anything else (no bare numbers: a unit is
// always required so that "28" cannot mean 28 ms by accident).
std::optional<std::int64_t> parse_duration(std::string_view s);

// "512", "64KiB", "16MiB", "1GiB", "10KB", "5MB", "2GB". Returns bytes.
std::optional<std::int64_t> parse_size(std::string_view s);

// 2592000000 -> "30d", 90000 -> "1m30s".
std::string format_duration(std::int64_t ms);

std::string_view trim(std::string_view s);
std::string lower(std::string_view s);
std::string join(const std::vector<std::string>& parts, std::string_view sep);
// The non-empty parts of `s` between `sep`s ("a,,b" -> {"a", "b"}).
std::vector<std::string> split(std::string_view s, char sep);
bool is_lower_hex(std::string_view s);
// [a-z0-9][a-z0-9_-]* : names of plugins, instances, profiles, routes.
bool is_identifier(std::string_view s);

// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds.
std::string format_time_ms(std::int64_t ms);

} // namespace switchboard::text
