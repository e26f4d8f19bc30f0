#pragma once

// The reference client's index of the records it wrote (DirectorySink):
// which day file holds each record id, for duplicates and erase notices.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace switchboard::feed::detail {

// Record ids to the numbers of the day files holding them, asked about
// every record received. Ids as Switchboard makes them ("R<chunk>-<index>",
// digits without leading zeros) are one 64-bit key each in an open-
// addressing table: no string hashed, compared or allocated per record.
// Any other id goes to a map of strings.
class IdIndex {
public:
    IdIndex() : keys_(1024, kEmpty), files_(1024, 0) {}

    // Adds `id`; false (and nothing changed) when it is in already.
    bool insert(std::string_view id, std::uint32_t file) {
        if (auto key = key_of(id)) {
            std::size_t at = 0;
            if (slot_of(*key, at)) return false;
            if (keys_[at] == kEmpty) ++used_;
            keys_[at] = *key;
            files_[at] = file;
            ++live_;
            if (used_ * 4 > keys_.size() * 3) grow();
            return true;
        }
        return other_.try_emplace(std::string(id), file).second;
    }
    // Adds or moves `id`.
    void set(std::string_view id, std::uint32_t file) {
        if (!insert(id, file)) {
            if (auto key = key_of(id)) {
                std::size_t at = 0;
                slot_of(*key, at);
                files_[at] = file;
            } else {
                other_[std::string(id)] = file;
            }
        }
    }
    std::optional<std::uint32_t> find(std::string_view id) const {
        if (auto key = key_of(id)) {
            std::size_t at = 0;
            if (!slot_of(*key, at)) return std::nullopt;
            return files_[at];
        }
        auto it = other_.find(std::string(id));
        if (it == other_.end()) return std::nullopt;
        return it->second;
    }
    void erase(std::string_view id) {
        if (auto key = key_of(id)) {
            std::size_t at = 0;
            if (!slot_of(*key, at)) return;
            keys_[at] = kGone;
            --live_;
            return;
        }
        other_.erase(std::string(id));
    }
    std::size_t size() const { return live_ + other_.size(); }

    // "R<chunk>-<index>" as (chunk << 24 | index) + 1; nullopt for another form.
    static std::optional<std::uint64_t> key_of(std::string_view id) {
        if (id.size() < 4 || id[0] != 'R') return std::nullopt;
        const auto dash = id.find('-', 1);
        if (dash == std::string_view::npos) return std::nullopt;
        auto number = [](std::string_view d, std::uint64_t max) -> std::optional<std::uint64_t> {
            if (d.empty() || d.size() > 12 || (d.size() > 1 && d[0] == '0')) return std::nullopt;
            std::uint64_t v = 0;
            for (char c : d) {
                if (c < '0' || c > '9') return std::nullopt;
                v = v * 10 + static_cast<std::uint64_t>(c - '0');
            }
            if (v > max) return std::nullopt;
            return v;
        };
        auto chunk = number(id.substr(1, dash - 1), (1ULL << 39) - 1);
        auto index = number(id.substr(dash + 1), (1ULL << 24) - 1);
        if (!chunk || !index) return std::nullopt;
        return (*chunk << 24 | *index) + 1;
    }

private:
    static constexpr std::uint64_t kEmpty = 0, kGone = ~0ULL; // (no key is either)

    // True with `at` the key's slot; false with `at` where it would go.
    bool slot_of(std::uint64_t key, std::size_t& at) const {
        const std::size_t mask = keys_.size() - 1;
        std::size_t i = static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ULL) >> 20) & mask;
        std::size_t free = SIZE_MAX;
        for (;; i = (i + 1) & mask) {
            const std::uint64_t k = keys_[i];
            if (k == key) {
                at = i;
                return true;
            }
            if (k == kGone) {
                if (free == SIZE_MAX) free = i;
                continue;
            }
            if (k == kEmpty) {
                at = free != SIZE_MAX ? free : i;
                return false;
            }
        }
    }
    void grow() {
        std::vector<std::uint64_t> keys;
        std::vector<std::uint32_t> files;
        keys.swap(keys_);
        files.swap(files_);
        // Twice the size, unless most of what is used is erased keys.
        const std::size_t size = live_ * 2 > keys.size() / 2 ? keys.size() * 2 : keys.size();
        keys_.assign(size, kEmpty);
        files_.assign(size, 0);
        used_ = live_;
        for (std::size_t k = 0; k < keys.size(); ++k) {
            if (keys[k] == kEmpty || keys[k] == kGone) continue;
            std::size_t at = 0;
            slot_of(keys[k], at);
            keys_[at] = keys[k];
            files_[at] = files[k];
        }
    }

    std::vector<std::uint64_t> keys_;  // a power of two of slots
    std::vector<std::uint32_t> files_; // by slot
    std::size_t used_ = 0, live_ = 0;  // slots not empty; of them, keys in
    std::unordered_map<std::string, std::uint32_t> other_;
};

} // namespace switchboard::feed::detail
