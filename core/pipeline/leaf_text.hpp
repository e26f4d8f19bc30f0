// The text of a field's value, for rules and transforms that work on text:
// strings as they are, numbers and booleans in their JSON spelling (written
// into `buf`, so nothing is allocated), so that a card number sent as an
// integer is matched and redacted like one sent as a string. Null has none.
#pragma once

#include <switchboard/detail/record_data.hpp>

#include <charconv>
#include <optional>
#include <string_view>

namespace switchboard::pipeline {

inline std::optional<std::string_view> leaf_text(const sb::detail::Leaf& leaf, char (&buf)[32]) {
    switch (leaf.type) {
    case SB_VALUE_STRING: return std::string_view(leaf.str);
    case SB_VALUE_INT: {
        auto r = std::to_chars(buf, buf + sizeof buf, leaf.i);
        return std::string_view(buf, static_cast<std::size_t>(r.ptr - buf));
    }
    case SB_VALUE_FLOAT: {
        auto r = std::to_chars(buf, buf + sizeof buf, leaf.f);
        return std::string_view(buf, static_cast<std::size_t>(r.ptr - buf));
    }
    case SB_VALUE_BOOL: return std::string_view(leaf.i ? "true" : "false");
    default: return std::nullopt;
    }
}

} // namespace switchboard::pipeline
