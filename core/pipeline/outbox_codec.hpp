#pragma once

// How one outbox entry is stored: the route's purpose and profile, then the
// minimised record. Dead letters keep the same form, so a retry rebuilds the
// same delivery.

#include "pipeline/journal.hpp"
#include "store/codec.hpp"

namespace switchboard::pipeline {

inline void encode_entry(const OutboxEntry& e, std::string& out) {
    store::put_string(out, e.purpose);
    store::put_string(out, e.profile);
    store::put_varint(out, e.profile_version);
    store::encode(*e.record, out);
}

inline bool decode_entry_head(std::string_view in, std::size_t& pos, std::string_view& purpose,
                              std::string_view& profile, std::uint64_t& version) {
    return store::get_string(in, pos, purpose) && store::get_string(in, pos, profile) &&
           store::get_varint(in, pos, version);
}

// Steps over one entry without decoding its record.
inline bool skip_entry(std::string_view in, std::size_t& pos) {
    std::string_view purpose, profile;
    std::uint64_t version;
    return decode_entry_head(in, pos, purpose, profile, version) && store::skip(in, pos);
}

// Fills purpose, profile and record of `e` (which must own a record).
inline bool decode_entry(std::string_view in, std::size_t& pos, OutboxEntry& e) {
    std::string_view purpose, profile;
    std::uint64_t version;
    if (!decode_entry_head(in, pos, purpose, profile, version)) return false;
    e.purpose = std::string(purpose);
    e.profile = std::string(profile);
    e.profile_version = static_cast<std::uint32_t>(version);
    return store::decode(in, pos, *e.record);
}

// The record index of entry k of an outbox row (u32 little-endian each).
inline std::uint32_t outbox_index(std::string_view indexes, std::uint32_t k) {
    if (indexes.size() < (k + 1) * 4ull) return 0;
    const auto* p = reinterpret_cast<const unsigned char*>(indexes.data()) + k * 4;
    return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
           static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}

} // namespace switchboard::pipeline
