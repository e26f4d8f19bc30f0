#pragma once

// JSON output pieces shared by the governance reports (sar.cpp, erasure.cpp).

#include <switchboard/detail/abi.hpp>
#include <switchboard/detail/record_data.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace switchboard::governance {

// A JSON string literal (quotes included), appended.
inline void json_str(std::string& out, std::string_view s) { sb::detail::append_json_string(out, s); }

// An RFC 3339 time as a JSON string, or null for 0 (not known / not yet).
inline void json_time(std::string& out, std::int64_t t) {
    if (t) json_str(out, sb::detail::format_time(t));
    else out += "null";
}

} // namespace switchboard::governance
