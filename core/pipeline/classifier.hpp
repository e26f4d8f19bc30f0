#pragma once

// Query classification: the [[classify.rule]] list, compiled once from the
// config and applied to every record (up to ~100k records/s), so matching
// allocates nothing but the result: needles are folded to lowercase at
// compile time, fields are found by binary search on the record's sort keys
// (for a record set by a shape, once per shape and thread: the indexes are
// kept), and std::regex only runs for rules that ask for it.

#include "config/config.hpp"

#include <switchboard/detail/path_pattern.hpp>
#include <switchboard/detail/record_data.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::pipeline {

// The category of a record no rule matched. Only routes naming it take it.
inline constexpr std::string_view kUnclassified = "unclassified";

struct ClassifyResult {
    std::string category; // kUnclassified when no rule matched
    int rule = -1;        // index in [[classify.rule]], -1 when none matched
};

class Classifier {
public:
    enum class Matcher { Equals, OneOf, Contains, Regex, Keywords };

    struct Rule {
        int index = 0;
        std::string category;
        std::string field; // as written: "hints.queue", "content.turns[*].text"
        Matcher matcher = Matcher::Equals;
        bool case_sensitive = false;
        std::vector<std::string> sources; // empty: every source
        // Sort key (record_data.hpp) of the exact leaf, or of the literal
        // prefix of a pattern: the leaves to test are found by binary search.
        std::string key;
        std::optional<sb::detail::PathPattern> pattern; // set when `field` has [*] or .*
        // Equals/OneOf/Contains/Keywords: the needles, folded to lowercase
        // unless case_sensitive; keywords also have whitespace runs collapsed
        // to one space and are sorted by first byte, with `first[c]` ..
        // `first[c + 1]` the needles starting with byte c.
        std::vector<std::string> needles;
        std::array<std::uint16_t, 257> first{};
        std::optional<std::regex> regex;
        std::string description; // for explain: what the rule tests
    };

    // Compiles [[classify.rule]] of a loaded config. Problems the schema
    // already reported are skipped silently; new ones go to `out`. Never
    // throws for config problems.
    static Classifier compile(const config::Config& config, config::Diagnostics& out);

    // Rules are tried in order; the first match wins. Allocates nothing but
    // the result. Thread-safe (const).
    ClassifyResult classify(const sb_record& record) const;

    // "classify.rule[1] (content.text keywords \"missed bin\", \"bin\")";
    // "no rule matched" for -1.
    std::string describe_rule(int rule) const;

    const std::vector<Rule>& rules() const { return rules_; }

private:
    bool matches(const Rule& rule, const sb::detail::Leaf& leaf) const;
    // The leaves each rule looks at, by index, in a record of one shape:
    // found once per shape (and thread), not searched for in every record.
    struct ShapeMemo {
        std::uint64_t classifier = 0, shape = 0;
        std::size_t leaves = 0;              // the record's leaf count, checked
        std::vector<std::uint32_t> begin;    // rule r's leaves: at[begin[r]] .. at[begin[r + 1]]
        std::vector<std::uint32_t> at;
    };
    const ShapeMemo* memo_of_shape(const sb::detail::RecordData& record) const;
    // Calls take(k) for each leaf index k that `rule` looks at, in order,
    // until it returns true; returns whether one did. Searches by sort key.
    template <class Take>
    static bool for_each_candidate(const Rule& rule, const std::vector<sb::detail::Leaf>& leaves, Take&& take);

    std::vector<Rule> rules_;
    // Unique for the life of the process: keys this classifier's memos.
    std::uint64_t id_ = sb::detail::new_shape_id();
};

} // namespace switchboard::pipeline
