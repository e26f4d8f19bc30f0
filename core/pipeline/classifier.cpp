#include "pipeline/classifier.hpp"

#include "pipeline/leaf_text.hpp"
#include "util/text.hpp"

#include <algorithm>
#include <charconv>

namespace switchboard::pipeline {

namespace {

using sb::detail::Leaf;

// Longest text a regex rule looks at. libstdc++'s regex executor recurses
// per character and can exhaust the stack on long inputs; a classifier
// needs the start of a field, not all of a long transcript.
constexpr std::size_t kRegexWindow = 4096;

// ASCII case folding only: config needles and vendor queue names are ASCII
// in practice, and folding UTF-8 properly would need tables.
inline char fold(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Word characters for keyword boundaries. Bytes >= 0x80 count as letters so
// that "café" is one word and "caf" does not match inside it.
inline bool is_word(char ch) {
    auto c = static_cast<unsigned char>(ch);
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c >= 0x80;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

std::string fold_all(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = fold(c);
    return out;
}

// A keyword or phrase as it is matched: folded, and any run of whitespace
// as one space (which then matches any run of whitespace in the text).
std::string normalise_keyword(std::string_view s, bool case_sensitive) {
    std::string out;
    for (char c : trim(s)) {
        if (is_space(c)) {
            if (!out.empty() && out.back() != ' ') out.push_back(' ');
        } else {
            out.push_back(case_sensitive ? c : fold(c));
        }
    }
    return out;
}

bool equal_text(std::string_view value, std::string_view needle, bool case_sensitive) {
    value = trim(value);
    if (value.size() != needle.size()) return false;
    if (case_sensitive) return value == needle;
    for (std::size_t i = 0; i < value.size(); ++i)
        if (fold(value[i]) != needle[i]) return false;
    return true;
}

bool contains_text(std::string_view value, std::string_view needle, bool case_sensitive) {
    if (needle.size() > value.size()) return false;
    if (case_sensitive) return value.find(needle) != std::string_view::npos;
    const char first = needle[0];
    for (std::size_t i = 0; i + needle.size() <= value.size(); ++i) {
        if (fold(value[i]) != first) continue;
        std::size_t k = 1;
        while (k < needle.size() && fold(value[i + k]) == needle[k]) ++k;
        if (k == needle.size()) return true;
    }
    return false;
}

// Whether `needle` matches `text` at `i`; `end` receives where it stops.
bool match_at(std::string_view text, std::size_t i, std::string_view needle, bool case_sensitive,
              std::size_t& end) {
    std::size_t j = i;
    for (char n : needle) {
        if (n == ' ') {
            if (j >= text.size() || !is_space(text[j])) return false;
            while (j < text.size() && is_space(text[j])) ++j;
            continue;
        }
        if (j >= text.size()) return false;
        char c = case_sensitive ? text[j] : fold(text[j]);
        if (c != n) return false;
        ++j;
    }
    end = j;
    return true;
}

bool keywords_match(const Classifier::Rule& rule, std::string_view text) {
    for (std::size_t i = 0; i < text.size(); ++i) {
        auto c = static_cast<unsigned char>(rule.case_sensitive ? text[i] : fold(text[i]));
        std::uint16_t lo = rule.first[c], hi = rule.first[c + 1u];
        if (lo == hi) continue;
        // A needle that starts with a word character must start a word.
        bool mid_word = i > 0 && is_word(text[i - 1]);
        for (std::uint16_t k = lo; k < hi; ++k) {
            const std::string& needle = rule.needles[k];
            if (mid_word && is_word(needle.front())) continue;
            std::size_t end = 0;
            if (!match_at(text, i, needle, rule.case_sensitive, end)) continue;
            if (end < text.size() && is_word(needle.back()) && is_word(text[end])) continue;
            return true;
        }
    }
    return false;
}

std::vector<std::string> strings_of(const toml::node* n) {
    std::vector<std::string> out;
    if (!n) return out;
    if (n->is_string()) out.push_back(n->as_string()->get());
    if (const toml::array* a = n->as_array())
        for (const auto& e : *a)
            if (e.is_string()) out.push_back(e.as_string()->get());
    return out;
}

std::string quoted_list(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& s : items) {
        if (!out.empty()) out += ", ";
        sb::detail::append_json_string(out, s);
    }
    return out;
}

// The literal part of a field pattern before its first wildcard: "[*]" or a
// final ".*" (or all of "*").
std::string_view literal_prefix(std::string_view field) {
    if (field == "*") return {};
    std::size_t cut = field.size();
    if (auto w = field.find("[*]"); w != std::string_view::npos) cut = w;
    if (field.size() >= 2 && field.substr(field.size() - 2) == ".*")
        cut = std::min(cut, field.size() - 2);
    return field.substr(0, cut);
}

} // namespace

Classifier Classifier::compile(const config::Config& config, config::Diagnostics& out) {
    Classifier c;
    const toml::node* section = config.root.get("classify");
    const toml::table* classify = section ? section->as_table() : nullptr;
    const toml::array* list = classify && classify->get("rule") ? classify->get("rule")->as_array() : nullptr;
    if (!list) return c;

    std::vector<std::string> known_sources;
    for (const auto& s : config.sources) known_sources.push_back(s.name);

    for (std::size_t i = 0; i < list->size(); ++i) {
        const toml::table* t = (*list)[i].as_table();
        if (!t) continue;
        const std::string path = "classify.rule[" + std::to_string(i) + "]";
        Rule r;
        r.index = static_cast<int>(i);
        const toml::node* category = t->get("category");
        const toml::node* field = t->get("field");
        // Missing or mistyped keys were reported by the schema; a rule
        // missing either can never match, so it is left out. Its index is
        // still kept in `index` so messages name the right rule.
        if (!category || !category->is_string() || !field || !field->is_string()) continue;
        r.category = category->as_string()->get();
        r.field = field->as_string()->get();
        if (auto* cs = t->get("case_sensitive"); cs && cs->is_boolean()) r.case_sensitive = cs->as_boolean()->get();
        r.sources = strings_of(t->get("source"));
        for (const auto& s : r.sources)
            if (std::find(known_sources.begin(), known_sources.end(), s) == known_sources.end())
                out.warn(config::location_of(*t->get("source")), path + ".source",
                         "no source named '" + s + "' in [sources]; this rule never matches its records");

        if (r.category.empty()) {
            out.error(config::location_of(*category), path + ".category", "is empty");
            continue;
        }
        if (r.category == "*") {
            out.error(config::location_of(*category), path + ".category",
                      "'*' is not a category (it means every category in routes)");
            continue;
        }

        // The field: an exact leaf, or a pattern with [*] / .* wildcards.
        auto pattern = sb::detail::PathPattern::parse(r.field);
        if (!pattern) {
            out.error(config::location_of(*field), path + ".field",
                      "is not a field path (e.g. hints.queue, content.turns[*].text)");
            continue;
        }
        std::string_view prefix = literal_prefix(r.field);
        if (prefix.size() != r.field.size()) r.pattern = std::move(pattern);
        if (!prefix.empty()) {
            std::vector<sb::detail::PathSegment> segs;
            if (!sb::detail::parse_path(prefix, segs)) {
                out.error(config::location_of(*field), path + ".field", "is not a field path");
                continue;
            }
            sb::detail::append_sort_key(r.key, segs);
        }

        // Exactly one matcher: the schema reports anything else.
        std::string shown;
        const toml::node* needle_node = nullptr;
        if (auto* n = t->get("equals")) {
            r.matcher = Matcher::Equals;
            needle_node = n;
            r.needles = strings_of(n);
            shown = "equals " + quoted_list(r.needles);
        } else if (auto* n1 = t->get("one_of")) {
            r.matcher = Matcher::OneOf;
            needle_node = n1;
            r.needles = strings_of(n1);
            shown = "one_of " + quoted_list(r.needles);
        } else if (auto* n2 = t->get("contains")) {
            r.matcher = Matcher::Contains;
            needle_node = n2;
            r.needles = strings_of(n2);
            shown = "contains " + quoted_list(r.needles);
        } else if (auto* n3 = t->get("regex")) {
            r.matcher = Matcher::Regex;
            needle_node = n3;
            if (!n3->is_string()) continue;
            shown = "regex " + quoted_list({n3->as_string()->get()});
            auto flags = std::regex::ECMAScript | std::regex::optimize;
            if (!r.case_sensitive) flags |= std::regex::icase;
            try {
                r.regex.emplace(n3->as_string()->get(), flags);
            } catch (const std::regex_error&) {
                continue; // reported by the schema check
            }
        } else if (auto* n4 = t->get("keywords")) {
            r.matcher = Matcher::Keywords;
            needle_node = n4;
            r.needles = strings_of(n4);
            shown = "keywords " + quoted_list(r.needles);
        } else {
            continue; // reported by the schema check
        }

        if (r.matcher != Matcher::Regex) {
            if (r.needles.empty() && r.matcher != Matcher::Equals) {
                out.error(config::location_of(*needle_node), path, "has an empty list: it never matches");
                continue;
            }
            bool bad = false;
            for (auto& n : r.needles) {
                n = r.matcher == Matcher::Keywords ? normalise_keyword(n, r.case_sensitive)
                    : r.matcher == Matcher::Contains ? (r.case_sensitive ? n : fold_all(n))
                                                     : (r.case_sensitive ? std::string(trim(n)) : fold_all(trim(n)));
                // An empty keyword or substring would match every record.
                if (n.empty() && (r.matcher == Matcher::Keywords || r.matcher == Matcher::Contains)) bad = true;
            }
            if (bad) {
                out.error(config::location_of(*needle_node), path,
                          "has an empty word or text, which would match every record");
                continue;
            }
        }
        if (r.matcher == Matcher::Keywords) {
            if (r.needles.size() > 60000) continue; // first[] holds 16-bit offsets
            std::stable_sort(r.needles.begin(), r.needles.end(), [](const std::string& a, const std::string& b) {
                return static_cast<unsigned char>(a[0]) < static_cast<unsigned char>(b[0]);
            });
            std::size_t k = 0;
            for (unsigned c = 0; c <= 256; ++c) {
                while (k < r.needles.size() && static_cast<unsigned char>(r.needles[k][0]) < c) ++k;
                r.first[c] = static_cast<std::uint16_t>(k);
            }
        }

        r.description = path + " (" + r.field + " " + shown;
        if (r.case_sensitive) r.description += ", case sensitive";
        if (!r.sources.empty()) r.description += ", source " + text::join(r.sources, "/");
        r.description += ")";
        c.rules_.push_back(std::move(r));
    }
    return c;
}

bool Classifier::matches(const Rule& rule, const Leaf& leaf) const {
    char buf[32];
    auto value = leaf_text(leaf, buf);
    if (!value) return false;
    switch (rule.matcher) {
    case Matcher::Equals:
    case Matcher::OneOf:
        for (const auto& n : rule.needles)
            if (equal_text(*value, n, rule.case_sensitive)) return true;
        return false;
    case Matcher::Contains: return contains_text(*value, rule.needles[0], rule.case_sensitive);
    case Matcher::Keywords: return keywords_match(rule, *value);
    case Matcher::Regex: {
        std::string_view v = value->substr(0, kRegexWindow);
        try {
            return std::regex_search(v.begin(), v.end(), *rule.regex);
        } catch (const std::regex_error&) {
            return false; // complexity limits: treat as no match, never fail the record
        }
    }
    }
    return false;
}

template <class Take>
bool Classifier::for_each_candidate(const Rule& rule, const std::vector<Leaf>& leaves, Take&& take) {
    auto by_key = [](const Leaf& l, std::string_view k) { return std::string_view(l.key()) < k; };
    auto it = std::lower_bound(leaves.begin(), leaves.end(), std::string_view(rule.key), by_key);
    if (!rule.pattern)
        return it != leaves.end() && it->key() == rule.key && take(static_cast<std::size_t>(it - leaves.begin()));
    // Every leaf under the literal prefix; the pattern picks among them.
    for (; it != leaves.end() && std::string_view(it->key()).starts_with(rule.key); ++it)
        if (rule.pattern->matches(it->path()) && take(static_cast<std::size_t>(it - leaves.begin()))) return true;
    return false;
}

const Classifier::ShapeMemo* Classifier::memo_of_shape(const sb::detail::RecordData& record) const {
    const std::uint64_t shape = record.shape_id();
    if (shape == 0) return nullptr;
    ShapeMemo& m = sb::detail::thread_memo_slot<ShapeMemo, 6>(shape ^ (id_ << 32));
    const auto& leaves = record.leaves();
    if (m.classifier != id_ || m.shape != shape || m.leaves != leaves.size()) {
        m.classifier = id_;
        m.shape = shape;
        m.leaves = leaves.size();
        m.begin.clear();
        m.at.clear();
        for (const Rule& rule : rules_) {
            m.begin.push_back(static_cast<std::uint32_t>(m.at.size()));
            for_each_candidate(rule, leaves, [&](std::size_t k) {
                m.at.push_back(static_cast<std::uint32_t>(k));
                return false;
            });
        }
        m.begin.push_back(static_cast<std::uint32_t>(m.at.size()));
    }
    return &m;
}

ClassifyResult Classifier::classify(const sb_record& record) const {
    const auto& leaves = record.data.leaves();
    const char* source = record.data.meta("source");
    // A record set by a shape: the leaves each rule looks at were found
    // for the first record of that shape; any other is searched.
    const ShapeMemo* memo = memo_of_shape(record.data);
    for (std::size_t r = 0; r < rules_.size(); ++r) {
        const Rule& rule = rules_[r];
        if (!rule.sources.empty() &&
            (!source || std::find(rule.sources.begin(), rule.sources.end(), source) == rule.sources.end()))
            continue;
        auto take = [&](std::size_t k) { return matches(rule, leaves[k]); };
        if (memo ? std::any_of(memo->at.begin() + memo->begin[r], memo->at.begin() + memo->begin[r + 1], take)
                 : for_each_candidate(rule, leaves, take))
            return {rule.category, rule.index};
    }
    return {std::string(kUnclassified), -1};
}

std::string Classifier::describe_rule(int rule) const {
    for (const Rule& r : rules_)
        if (r.index == rule) return r.description;
    return "no rule matched";
}

} // namespace switchboard::pipeline
