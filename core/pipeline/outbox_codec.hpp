#pragma once

// How one outbox entry is stored: the route's purpose and profile, then the
// minimised record, or (what the journal writes now) a reference in its
// place: the fingerprint of the profile, whether the route has a lawful
// basis and when it was routed, from which the copy is made again out of
// the record in its chunk (Journal::rebuild). Both are length-prefixed, so
// an entry is skipped without knowing which it holds. Dead letters keep the
// minimised record, so a retry rebuilds the same delivery; one dead-lettered
// because its copy could not be made keeps the reference, and its retry
// tries to make the copy again.

#include "pipeline/journal.hpp"
#include "store/codec.hpp"

#include <algorithm>

namespace switchboard::pipeline {

// The first byte of a reference, where a record has its format version
// (1 or 2).
inline constexpr unsigned char kReferenceForm = 0x80;

// An entry that is "the same as the one before it in the row": the same
// purpose, profile, version and reference (the copies of one route in one
// chunk, which is what a row holds, nearly always). Two bytes that no
// entry starts with: a varint of 0 with a needless continuation byte,
// which put_varint never writes. Only ever after an entry with a reference.
inline constexpr char kRepeatEntry[2] = {'\x80', '\x00'};

inline void encode_repeat(std::string& out) { out.append(kRepeatEntry, 2); }

inline bool is_repeat(std::string_view in, std::size_t pos) {
    return in.size() - std::min(pos, in.size()) >= 2 && in[pos] == kRepeatEntry[0] && in[pos + 1] == kRepeatEntry[1];
}

// What a repeat entry stands for: the last entry with a reference read in
// the row (reset for each row).
struct EntryContext {
    bool have = false;
    std::string_view purpose, profile;
    std::uint64_t version = 0;
};

inline void encode_reference(std::string_view fingerprint, bool lawful_basis, std::int64_t routed_at,
                             std::string& out) {
    std::string body;
    body.push_back(static_cast<char>(kReferenceForm));
    store::put_string(body, fingerprint);
    store::put_varint(body, lawful_basis ? 1 : 0);
    store::put_varint(body, static_cast<std::uint64_t>(std::max<std::int64_t>(routed_at, 0)));
    store::put_varint(out, body.size());
    out += body;
}

inline void encode_reference(const EntryRef& ref, std::string& out) {
    encode_reference(ref.fingerprint, ref.lawful_basis, ref.routed_at, out);
}

// The reference of an entry made at commit (OutboxEntry's own fields).
inline void encode_reference(const OutboxEntry& e, std::string& out) {
    encode_reference(e.fingerprint, e.lawful_basis, e.routed_at, out);
}

inline void encode_entry_head(std::string_view purpose, std::string_view profile, std::uint64_t version,
                              std::string& out) {
    store::put_string(out, purpose);
    store::put_string(out, profile);
    store::put_varint(out, version);
}

inline void encode_entry(const OutboxEntry& e, std::string& out) {
    encode_entry_head(e.purpose, e.profile, e.profile_version, out);
    if (e.record && e.record->is_rendered) // no tree to store: made again from its chunk
        encode_reference(e, out);
    else if (e.record)
        store::encode(*e.record, out);
    else if (e.unbuilt)
        encode_reference(e.unbuilt->ref, out);
    else
        store::encode(sb_record(), out);
}

inline bool decode_entry_head(std::string_view in, std::size_t& pos, std::string_view& purpose,
                              std::string_view& profile, std::uint64_t& version) {
    return store::get_string(in, pos, purpose) && store::get_string(in, pos, profile) &&
           store::get_varint(in, pos, version);
}

// Steps over one entry without decoding its record.
inline bool skip_entry(std::string_view in, std::size_t& pos) {
    if (is_repeat(in, pos)) {
        pos += 2;
        return true;
    }
    std::string_view purpose, profile;
    std::uint64_t version;
    return decode_entry_head(in, pos, purpose, profile, version) && store::skip(in, pos);
}

enum class EntryForm { Bad, Record, Reference };

// Fills purpose and profile of `e`, then its record (made when `e` has
// none) or `ref`, and says which it was. Reading a row entry by entry,
// `context` (one per row) and `ref` (kept from the entry before) give a
// repeat entry what it repeats; without a context a repeat is Bad.
inline EntryForm decode_entry(std::string_view in, std::size_t& pos, OutboxEntry& e, EntryRef& ref,
                              EntryContext* context = nullptr) {
    if (is_repeat(in, pos)) {
        if (!context || !context->have) return EntryForm::Bad;
        pos += 2;
        e.purpose = context->purpose;
        e.profile = context->profile;
        e.profile_version = static_cast<std::uint32_t>(context->version);
        return EntryForm::Reference; // `ref` as the entry before left it
    }
    if (context) context->have = false;
    std::string_view purpose, profile;
    std::uint64_t version;
    if (!decode_entry_head(in, pos, purpose, profile, version)) return EntryForm::Bad;
    e.purpose = purpose;
    e.profile = profile;
    e.profile_version = static_cast<std::uint32_t>(version);
    std::size_t at = pos;
    std::string_view body;
    if (!store::get_string(in, at, body) || body.empty()) return EntryForm::Bad;
    if (static_cast<unsigned char>(body[0]) != kReferenceForm) {
        if (!e.record) e.record = std::make_shared<sb_record>();
        return store::decode(in, pos, *e.record) ? EntryForm::Record : EntryForm::Bad;
    }
    std::size_t k = 1;
    std::string_view fingerprint;
    std::uint64_t flags = 0, routed_at = 0;
    if (!store::get_string(body, k, fingerprint) || !store::get_varint(body, k, flags) ||
        !store::get_varint(body, k, routed_at) || k != body.size())
        return EntryForm::Bad;
    ref.fingerprint = std::string(fingerprint);
    ref.lawful_basis = flags & 1;
    ref.routed_at = static_cast<std::int64_t>(routed_at);
    pos = at;
    if (context) *context = {true, purpose, profile, version};
    return EntryForm::Reference;
}

// The record index of entry k of an outbox row (u32 little-endian each).
inline std::uint32_t outbox_index(std::string_view indexes, std::uint32_t k) {
    if (indexes.size() < (k + 1) * 4ull) return 0;
    const auto* p = reinterpret_cast<const unsigned char*>(indexes.data()) + k * 4;
    return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
           static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}

} // namespace switchboard::pipeline
