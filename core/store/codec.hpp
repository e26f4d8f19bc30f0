#pragma once

// Compact binary form of a record, for the journal and the outbox.
// Records are read back only by this code, so the format is private; a
// version byte leads each record so that it can evolve.

#include <switchboard/detail/record_data.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::store {

// Appends `record` to `out`, length-prefixed.
void encode(const sb_record& record, std::string& out);

// Reads one record at `pos` in `in`, advancing `pos`. False on malformed
// input (a corrupt store: callers report it, never crash). With `keep`, only
// the leaves whose path it keeps are read into the record (the others are
// checked and stepped over): for a reader that wants a few fields of a
// record, such as a profile making its copy.
struct LeafFilter {
    bool (*keep)(const void* context, const sb::detail::PathAtom* path) = nullptr;
    const void* context = nullptr;
};

// A chunk's table of heads (format 2: see codec.cpp), read from the start of
// its body; empty for a chunk of format 1. Its records start at `first`.
// The views point into the body.
struct ChunkHeads {
    std::vector<std::string_view> heads;
    std::size_t first = 0;
    // False when the table is malformed (a corrupt store).
    bool read(std::string_view body);
};

// A record of version 4 needs its chunk's `table` (false without it).
bool decode(std::string_view in, std::size_t& pos, sb_record& record, const LeafFilter* keep = nullptr,
            const ChunkHeads* table = nullptr);

// Appends the table of a chunk of format 2 (nothing when `heads` is empty:
// format 1), before its records.
void put_chunk_heads(const std::vector<std::string_view>& heads, std::string& out);

// Skips one record at `pos` without decoding it.
bool skip(std::string_view in, std::size_t& pos);

// Encoding in two steps, for the journal: everything but the record's id
// (meta "id", known only when the record is committed) ahead of the commit,
// then the record with its id. append() writes exactly what encode() writes
// for the record with that id.
class PreEncoded {
public:
    PreEncoded() = default;
    explicit PreEncoded(const sb_record& record) { assign(record); }
    // Encodes `record` in place of what was here, in the same buffer.
    void assign(const sb_record& record);
    // Forgets the encoding; keeps the buffer unless it is over `keep` bytes.
    void clear(std::size_t keep) {
        if (tail_.capacity() > keep) std::string().swap(tail_);
        tail_.clear();
        mask_ = 0;
        heads_.reset();
    }
    // The record, self-contained (version 3): what encode() writes.
    void append(std::string_view id, std::string& out) const;
    // For a chunk of format 2: the record in two pieces, what comes up to
    // the id (a few bytes), then tail(), which the caller may write from
    // where it is. A record of a shape is written as version 4, naming its
    // heads() by `heads_index` in the chunk's table; one without (heads()
    // null) as version 3, the index unused.
    void append_head(std::string_view id, std::uint64_t heads_index, std::string& out) const;
    const std::shared_ptr<const std::string>& heads() const { return heads_; }
    std::string_view tail() const { return tail_; }
    std::size_t capacity() const { return tail_.capacity(); } // of its buffer
    std::size_t size() const { return tail_.size() + 32; } // about what append() adds

private:
    std::uint64_t mask_ = 0; // meta present, id included
    std::string tail_;       // the body after the id (without the heads when heads_ is set)
    std::size_t split_ = 0;  // where version 3 puts the heads in tail_
    std::shared_ptr<const std::string> heads_; // the record's shape's heads, or null
};

// Low-level pieces, shared with other store formats. Inline: a record's
// encoding writes several per field, most of them a single byte; longer
// ones go out of line (put_varint_long), so that this stays small enough
// to be inlined where it is called.
void put_varint_long(std::string& out, std::uint64_t v);
inline void put_varint(std::string& out, std::uint64_t v) {
    if (v < 0x80) [[likely]] {
        out.push_back(static_cast<char>(v));
        return;
    }
    put_varint_long(out, v);
}
bool get_varint(std::string_view in, std::size_t& pos, std::uint64_t& v);
inline void put_string(std::string& out, std::string_view s) {
    put_varint(out, s.size());
    out.append(s);
}
bool get_string(std::string_view in, std::size_t& pos, std::string_view& s);

} // namespace switchboard::store
