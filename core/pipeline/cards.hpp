#pragma once

// Card data at ingest: redacted in every string field of a record, whatever
// the profiles say, so that it is never at rest here (issue #3).

#include "pipeline/pii.hpp"
#include "switchboard/detail/record_data.hpp"

#include <cstdint>

namespace switchboard::pipeline {

// pii::redact_cards() on every string leaf of `record` that may have changed
// since it was last looked at (RecordData::cards_clean), counting what it
// redacts with note_cards_redacted(). Returns the card data redacted in the
// record since it was new (RecordData::cards_redacted). Called where a
// source sets a record's fields (the plugin host's record_set_shape, while
// the values are in the cache) and again when the journal takes the record,
// which then looks only at leaves set or changed since.
inline std::uint32_t redact_card_leaves(sb::detail::RecordData& record) {
    if (record.cards_clean()) return record.cards_redacted();
    std::uint32_t found = 0;
    for (auto& leaf : record.mutable_leaves()) {
        if (leaf.type != SB_VALUE_STRING) continue;
        if (auto redacted = pii::redact_cards(leaf.str)) {
            leaf.str = std::move(*redacted);
            ++found;
        }
    }
    record.note_cards_redacted(found);
    return record.cards_redacted();
}

} // namespace switchboard::pipeline
