// Switchboard SDK: field path patterns, as profiles and category maps write
// them. Header-only; shared by the core and plugins.
//
//   citizen.name              exactly that leaf
//   content.turns[*].text     the text of every element of the array
//   content.turns[2].text     one element
//   citizen.*                 everything under citizen (not citizen itself)
//   *                         everything
//
// A pattern is matched against canonical leaf paths (record_data.hpp).
#pragma once

#include <switchboard/detail/record_data.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sb::detail {

class PathPattern {
public:
    // nullopt if the text is not a pattern.
    static std::optional<PathPattern> parse(std::string_view text) {
        PathPattern p;
        p.text_ = std::string(text);
        if (text == "*") {
            p.subtree_ = true;
            return p;
        }
        if (text.size() >= 2 && text.substr(text.size() - 2) == ".*") {
            p.subtree_ = true;
            text.remove_suffix(2);
        }
        if (text.empty() || text.size() > kMaxPathLength) return std::nullopt;
        std::size_t i = 0;
        bool expect_key = true;
        while (i < text.size()) {
            if (expect_key) {
                std::size_t start = i;
                while (i < text.size() && is_key_char(text[i])) ++i;
                if (i == start) return std::nullopt;
                p.segs_.push_back({std::string(text.substr(start, i - start)), -1});
                expect_key = false;
            } else if (text[i] == '.') {
                ++i;
                expect_key = true;
            } else if (text[i] == '[') {
                ++i;
                if (i < text.size() && text[i] == '*') {
                    ++i;
                    p.segs_.push_back({{}, kAny});
                } else {
                    std::size_t start = i;
                    std::int64_t n = 0;
                    while (i < text.size() && text[i] >= '0' && text[i] <= '9' && i - start < 7)
                        n = n * 10 + (text[i++] - '0');
                    if (i == start || n > kMaxArrayIndex) return std::nullopt;
                    p.segs_.push_back({{}, n});
                }
                if (i >= text.size() || text[i] != ']') return std::nullopt;
                ++i;
            } else {
                return std::nullopt;
            }
            if (p.segs_.size() > kMaxPathDepth) return std::nullopt;
        }
        if (expect_key) return std::nullopt;
        return p;
    }

    // Whether the leaf at `path` (canonical form) is selected.
    bool matches(std::string_view path) const {
        std::size_t i = 0;
        for (const Seg& s : segs_) {
            if (s.index == -1) { // key
                if (i > 0) {
                    if (i >= path.size() || path[i] != '.') return false;
                    ++i;
                }
                if (path.compare(i, s.key.size(), s.key) != 0) return false;
                i += s.key.size();
                if (i < path.size() && path[i] != '.' && path[i] != '[') return false;
            } else { // index
                if (i >= path.size() || path[i] != '[') return false;
                std::size_t close = path.find(']', i);
                if (close == std::string_view::npos) return false;
                if (s.index != kAny) {
                    std::int64_t n = 0;
                    for (std::size_t k = i + 1; k < close; ++k) n = n * 10 + (path[k] - '0');
                    if (n != s.index) return false;
                }
                i = close + 1;
            }
        }
        if (i == path.size()) return !subtree_ || segs_.empty();
        // Something follows: only a subtree pattern takes it.
        return subtree_ && (segs_.empty() || path[i] == '.' || path[i] == '[');
    }

    // Higher is more specific: exact leaves beat subtrees, literal segments
    // beat wildcards, deeper beats shallower. Used when patterns overlap.
    int specificity() const {
        int score = subtree_ ? 0 : 1'000'000;
        for (const Seg& s : segs_) score += s.index == kAny ? 10 : 100;
        return score;
    }

    const std::string& text() const { return text_; }
    bool subtree() const { return subtree_; }
    // The literal first key ("" for "*"), e.g. to spot "special.*".
    std::string_view first_key() const {
        return segs_.empty() ? std::string_view() : std::string_view(segs_[0].key);
    }

private:
    static constexpr std::int64_t kAny = -2;
    struct Seg {
        std::string key;         // for keys
        std::int64_t index = -1; // -1 key, kAny [*], >= 0 [N]
    };
    std::string text_;
    std::vector<Seg> segs_;
    bool subtree_ = false;
};

// Picks, for each leaf, the most specific matching pattern of a list.
template <class T>
const T* most_specific(const std::vector<std::pair<PathPattern, T>>& rules, std::string_view path) {
    const T* best = nullptr;
    int best_score = -1;
    for (const auto& [pattern, value] : rules) {
        if (!pattern.matches(path)) continue;
        int s = pattern.specificity();
        if (s > best_score) {
            best_score = s;
            best = &value;
        }
    }
    return best;
}

} // namespace sb::detail
