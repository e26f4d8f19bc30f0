#include "pipeline/profile.hpp"

#include "pipeline/pii.hpp"
#include "pipeline/leaf_text.hpp"
#include "util/text.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <optional>
#include <regex>
#include <sstream>

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace switchboard::pipeline {

namespace {

using sb::detail::AttachmentData;
using sb::detail::Leaf;

// The envelope a destination receives. external_id and subject_ref are the
// vendor's identifiers of the citizen and the contact: they stay here.
constexpr const char* kSentMeta[] = {"id", "source", "channel", "category", "occurred_at", "received_at",
                                     "expires_at"};

bool is_special(std::string_view category) {
    // (Asked for every field of every copy: most categories are told apart
    // by their first byte, without a call to compare.)
    if (category.size() < 7 || category[0] != 's') return false;
    return category == "special" || category.starts_with("special.");
}

// Leaf path up to its first '.' or '['.
std::string_view first_key_of(std::string_view path) {
    return path.substr(0, std::min(path.find('.'), path.find('[')));
}

struct ParsedTransform {
    Transform transform;
    int mask_keep = 4;
};

std::string hmac_hex(std::string_view key, std::string_view text, std::size_t bytes) {
    static const unsigned char kEmpty = 0; // HMAC() wants a non-null key pointer
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    const void* k = key.empty() ? static_cast<const void*>(&kEmpty) : static_cast<const void*>(key.data());
    if (!HMAC(EVP_sha256(), k, static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(text.data()),
              text.size(), mac, &len))
        return {};
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (std::size_t i = 0; i < std::min<std::size_t>(bytes, len); ++i) {
        out.push_back(hex[mac[i] >> 4]);
        out.push_back(hex[mac[i] & 15]);
    }
    return out;
}

std::optional<ParsedTransform> parse_transform(std::string_view t) {
    if (t == "keep") return ParsedTransform{Transform::Keep};
    if (t == "hash") return ParsedTransform{Transform::Hash};
    if (t == "redact") return ParsedTransform{Transform::Redact};
    if (t == "mask") return ParsedTransform{Transform::Mask, 4};
    if (t == "generalise:postcode") return ParsedTransform{Transform::GeneralisePostcode};
    if (t == "generalise:month") return ParsedTransform{Transform::GeneraliseMonth};
    if (t == "generalise:age_band") return ParsedTransform{Transform::GeneraliseAgeBand};
    if (t.starts_with("mask:") && t.size() > 5 && t.size() <= 7) {
        int n = 0;
        auto r = std::from_chars(t.data() + 5, t.data() + t.size(), n);
        if (r.ec == std::errc() && r.ptr == t.data() + t.size()) return ParsedTransform{Transform::Mask, n};
    }
    return std::nullopt;
}

Action action_of(Transform t) {
    switch (t) {
    case Transform::Keep: return Action::Kept;
    case Transform::Mask: return Action::Masked;
    case Transform::Hash: return Action::Hashed;
    case Transform::Redact: return Action::Redacted;
    default: return Action::Generalised;
    }
}

const char* generalised_to(Transform t) {
    switch (t) {
    case Transform::GeneralisePostcode: return "postcode district";
    case Transform::GeneraliseMonth: return "month";
    default: return "age band";
    }
}

const char* not_a(Transform t) {
    return t == Transform::GeneralisePostcode ? "not a postcode" : "not a date";
}

// "NINO, CARD": the kinds found, each once, in order of first appearance.
std::string kinds_found(const std::vector<pii::Finding>& found) {
    std::string out;
    std::vector<pii::Kind> seen;
    for (const auto& f : found) {
        if (std::find(seen.begin(), seen.end(), f.kind) != seen.end()) continue;
        seen.push_back(f.kind);
        std::string_view p = pii::placeholder(f.kind);
        if (p.size() >= 2 && p.front() == '[' && p.back() == ']') p = p.substr(1, p.size() - 2);
        if (!out.empty()) out += ", ";
        out += p;
    }
    return out.empty() ? "nothing found" : out;
}

} // namespace

const char* action_name(Action action) {
    switch (action) {
    case Action::Kept: return "kept";
    case Action::Masked: return "masked";
    case Action::Hashed: return "hashed";
    case Action::Redacted: return "redacted";
    case Action::Generalised: return "generalised";
    case Action::Dropped: return "dropped";
    }
    return "dropped";
}

Profile Profile::compile(const std::string& name, const toml::table& table, const std::string* hash_key,
                         config::Diagnostics& out) {
    static std::atomic<std::uint64_t> last_id{0};
    Profile p;
    p.id_ = ++last_id;
    p.name_ = name;
    const std::string path = config::join_path("profiles", name);
    if (auto* v = table.get("version"); v && v->is_integer() && v->as_integer()->get() >= 1)
        p.version_ = static_cast<int>(std::min<std::int64_t>(v->as_integer()->get(), 1'000'000'000));
    if (auto* d = table.get("description"); d && d->is_string()) p.description_ = d->as_string()->get();
    if (hash_key && !hash_key->empty()) {
        p.hash_key_ = *hash_key;
        p.has_hash_key_ = true;
    }
    const bool hash_key_configured = table.contains("hash_key");

    const toml::node* fields_node = table.get("fields");
    const toml::table* fields = fields_node ? fields_node->as_table() : nullptr;
    std::vector<std::string> hashed;
    const toml::node* first_hash = nullptr;
    if (fields) {
        // The schema's own field path grammar: keys it accepts but
        // PathPattern refuses (index > 65535, too deep) are reported here.
        static const std::regex grammar(
            R"(^[A-Za-z0-9_-]+(\[([0-9]+|\*)\])*(\.[A-Za-z0-9_-]+(\[([0-9]+|\*)\])*)*(\.\*)?$)");
        for (auto&& [key, value] : *fields) {
            std::string_view text = key.str();
            const std::string key_path = config::join_path(path + ".fields", text);
            auto pattern = sb::detail::PathPattern::parse(text);
            if (!pattern) {
                if (std::regex_match(text.begin(), text.end(), grammar))
                    out.error(config::location_of(key), key_path,
                              "is not a usable field path (indexes go up to 65535, 32 levels at most)");
                continue; // otherwise already reported by the schema
            }
            if (!value.is_string()) continue;
            auto t = parse_transform(value.as_string()->get());
            if (!t) continue; // reported by the schema
            FieldRule rule{std::move(*pattern), t->transform, t->mask_keep, value.as_string()->get()};
            if (rule.transform == Transform::Hash) {
                hashed.emplace_back(text);
                if (!first_hash) first_hash = &value;
            }
            if (rule.pattern.first_key() == "attachments" && rule.transform != Transform::Keep)
                out.warn(config::location_of(value), key_path,
                         "attachments are sent by reference with keep, or not at all: '" + rule.transform_text +
                             "' drops them");
            if (text == "*" || rule.pattern.first_key() == "special") p.special_patterns_.emplace_back(text);
            p.rules_.push_back(std::move(rule));
        }
    }
    if (first_hash && !hash_key_configured)
        out.error(config::location_of(*first_hash), path + ".hash_key",
                  "missing: " + std::string(hashed.size() == 1 ? "field " : "fields ") + text::join(hashed, ", ") +
                      (hashed.size() == 1 ? " uses" : " use") +
                      " hash, which needs the profile's hash_key (a secret: \"env:NAME\" or \"file:PATH\")");

    // Index: rules by first key, each group also holding the "*" rules, in
    // decreasing specificity so the first match is the most specific.
    std::vector<std::uint32_t> order(p.rules_.size());
    for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
        return p.rules_[a].pattern.specificity() > p.rules_[b].pattern.specificity();
    });
    for (std::uint32_t i : order) {
        std::string_view fk = p.rules_[i].pattern.first_key();
        if (fk.empty()) {
            p.wildcard_rules_.push_back(i);
            continue;
        }
        auto g = std::find_if(p.groups_.begin(), p.groups_.end(), [&](const Group& x) { return x.first_key == fk; });
        if (g == p.groups_.end()) {
            p.groups_.push_back({std::string(fk), {}});
            g = p.groups_.end() - 1;
        }
    }
    for (Group& g : p.groups_)
        for (std::uint32_t i : order) {
            std::string_view fk = p.rules_[i].pattern.first_key();
            if (fk.empty() || fk == g.first_key) g.rules.push_back(i);
        }
    std::sort(p.groups_.begin(), p.groups_.end(),
              [](const Group& a, const Group& b) { return a.first_key < b.first_key; });

    // What apply() depends on, in rule order (the table's, which ties
    // follow), each part length-prefixed so that no two differ by where
    // one part ends.
    if (p.has_hash_key_) p.key_fingerprint_ = hmac_hex(p.hash_key_, "switchboard profile hash key", 32);
    std::string canon = "switchboard profile 1";
    auto part = [&](std::string_view text) {
        canon += '\n';
        canon += std::to_string(text.size());
        canon += ':';
        canon += text;
    };
    part(p.name_);
    part(std::to_string(p.version_));
    for (const FieldRule& r : p.rules_) {
        part(r.pattern.text());
        part(r.transform_text);
    }
    part(p.key_fingerprint_);
    p.fingerprint_ = hmac_hex("switchboard", canon, 16);
    toml::table doc{{"name", p.name_}, {"key_fingerprint", p.key_fingerprint_}, {"profile", table}};
    std::ostringstream def;
    def << doc;
    p.definition_ = def.str();
    return p;
}

const std::vector<std::uint32_t>& Profile::candidates(std::string_view path) const {
    std::string_view fk = first_key_of(path);
    auto g = std::lower_bound(groups_.begin(), groups_.end(), fk,
                              [](const Group& x, std::string_view k) { return std::string_view(x.first_key) < k; });
    if (g != groups_.end() && g->first_key == fk) return g->rules;
    return wildcard_rules_;
}

const FieldRule* Profile::rule_for(std::string_view path) const {
    for (std::uint32_t i : candidates(path))
        if (rules_[i].pattern.matches(path)) return &rules_[i];
    return nullptr;
}

const FieldRule* Profile::rule_for(const Leaf& leaf) const { return rule_for(leaf.path_atom()); }

const FieldRule* Profile::rule_for(const sb::detail::PathAtom* atom) const {
    // Only interned atoms are immortal: another record's owned atom may
    // come back at the same address.
    if (!atom->interned) return rule_for(std::string_view(atom->path));
    struct Entry {
        std::uint64_t profile = 0;
        const sb::detail::PathAtom* atom = nullptr;
        std::int64_t rule = -1; // index in rules_; -1 for none
    };
    Entry& e = sb::detail::thread_memo_slot<Entry, 10>((reinterpret_cast<std::uintptr_t>(atom) >> 4) ^ id_);
    if (e.profile == id_ && e.atom == atom && e.rule < static_cast<std::int64_t>(rules_.size()))
        return e.rule < 0 ? nullptr : &rules_[static_cast<std::size_t>(e.rule)];
    const FieldRule* rule = rule_for(std::string_view(atom->path));
    e = {id_, atom, rule ? rule - rules_.data() : -1};
    return rule;
}

Profile::ShapeMemo* Profile::memo_of_shape(const sb::detail::RecordData& record) const {
    const std::uint64_t shape = record.shape_id();
    if (shape == 0) return nullptr;
    ShapeMemo& m = sb::detail::thread_memo_slot<ShapeMemo, 6>(shape ^ (id_ << 32));
    const auto& leaves = record.leaves();
    if (m.profile != id_ || m.shape != shape || m.rules.size() != leaves.size()) {
        m.profile = id_;
        m.shape = shape;
        m.copy_shape = sb::detail::new_shape_id();
        m.summary.clear();
        m.summary_ready = false;
        m.rules.resize(leaves.size());
        m.ruled = 0;
        for (std::size_t k = 0; k < leaves.size(); ++k) {
            const FieldRule* rule = rule_for(leaves[k]);
            m.rules[k] = rule ? static_cast<std::int32_t>(rule - rules_.data()) : -1;
            m.ruled += rule != nullptr;
        }
    }
    return &m;
}

std::size_t Profile::apply(const sb_record& in, sb_record& out, bool route_has_lawful_basis, std::int64_t now_ms,
                           std::vector<FieldDecision>* decisions, std::string* summary) const {
    return apply(in, out, route_has_lawful_basis, now_ms, decisions, summary, true, false);
}

std::uint64_t Profile::sent_summary(const sb_record& in, bool route_has_lawful_basis, std::int64_t now_ms,
                                    std::string& summary) const {
    sb_record scratch;
    apply(in, scratch, route_has_lawful_basis, now_ms, nullptr, &summary, true, true);
    return scratch.data.attachments().empty() ? scratch.data.shape_id() : 0;
}

std::size_t Profile::apply(const sb_record& in, sb_record& out, bool route_has_lawful_basis, std::int64_t now_ms,
                           std::vector<FieldDecision>* decisions, std::string* summary, bool memoised_summary,
                           bool dry) const {
    // As new, but for the buffers of a recycled copy (RecordData::recycle).
    out.data.recycle();
    // The input's envelope is valid already: copied as it is.
    static const auto sent_meta = [] {
        std::array<int, std::size(kSentMeta)> idx{};
        for (std::size_t k = 0; k < idx.size(); ++k) idx[k] = sb::detail::meta_index(kSentMeta[k]);
        return idx;
    }();
    ShapeMemo* memo = memo_of_shape(in.data); // the leaves' rules, when it has a shape
    if (!dry) {
        for (int idx : sent_meta)
            if (const std::string* v = in.data.meta_at(idx)) out.data.set_meta_at(idx, *v);
        // Room for the leaves a rule names (a third of a contact's, say),
        // not for all of the input's.
        out.data.reserve_leaves(memo ? memo->ruled : in.data.leaves().size());
    }
    if (decisions) decisions->clear();
    if (summary) summary->clear();

    std::size_t sent = 0;
    // The leaves' part of the summary is the same for every record of a
    // shape from which no value was dropped: taken from the memo when it
    // has it (summary_on false while the leaves are decided).
    bool summary_on = summary && !(memo && memo->summary_ready && memoised_summary);
    // Reason texts are only built when asked for: the delivery path never
    // pays for them.
    auto decide = [&](std::string_view path, const std::string& category, Action action, const FieldRule* rule,
                      auto&& reason) {
        if (action != Action::Dropped) {
            ++sent;
            if (summary_on) {
                if (!summary->empty()) summary->push_back(',');
                summary->append(path);
                summary->push_back(':');
                summary->append(rule->transform_text);
            }
        }
        if (!decisions) return;
        decisions->push_back({std::string(path), category, action, rule ? rule->pattern.text() : std::string(),
                              action != Action::Dropped ? rule->transform_text : std::string(), reason()});
    };
    auto by = [&](const FieldRule* rule) { return " by profile " + name_ + " (" + rule->pattern.text() + ")"; };
    auto not_in_profile = [&] { return "dropped: not in profile " + name_; };
    auto special_dropped = [] {
        return std::string("dropped: special category (Art. 9) without a lawful basis on the route");
    };

    std::vector<pii::Finding> findings;
    const auto& leaves = in.data.leaves();
    // Whether a leaf was dropped for its value (a transform that could not
    // apply), not for its path or category: the copy's paths are then not
    // those of every copy of this shape.
    bool dropped_for_value = false;
    for (std::size_t k = 0; k < leaves.size(); ++k) {
        const Leaf& leaf = leaves[k];
        const std::int32_t r = memo ? memo->rules[k] : 0;
        const FieldRule* rule = memo ? (r < 0 ? nullptr : &rules_[static_cast<std::size_t>(r)]) : rule_for(leaf);
        // Art. 9 first: it is the reason that holds whatever the profile says.
        if (!route_has_lawful_basis && is_special(leaf.category())) {
            decide(leaf.path(), leaf.category(), Action::Dropped, rule, special_dropped);
            continue;
        }
        if (!rule) {
            decide(leaf.path(), leaf.category(), Action::Dropped, rule, not_in_profile);
            continue;
        }
        // The output's leaves are a subset of the input's, in the same
        // order: each is appended as it is (no path to parse, no place to
        // look for), then given its value.
        if (rule->transform == Transform::Keep) {
            if (!dry) out.data.append_copy(leaf);
            decide(leaf.path(), leaf.category(), Action::Kept, rule, [&] { return "kept" + by(rule); });
            continue;
        }
        char buf[32];
        std::optional<std::string_view> text = leaf_text(leaf, buf);
        bool generalise = rule->transform == Transform::GeneralisePostcode ||
                          rule->transform == Transform::GeneraliseMonth ||
                          rule->transform == Transform::GeneraliseAgeBand;
        if (!text) {
            // Null carries no value: it stays null, except where a
            // generalisation needs something to generalise.
            if (generalise) {
                dropped_for_value = true;
                decide(leaf.path(), leaf.category(), Action::Dropped, rule,
                       [&] { return std::string("dropped: ") + not_a(rule->transform) + "," + by(rule); });
                continue;
            }
            if (!dry) out.data.append_path_of(leaf); // null
            decide(leaf.path(), leaf.category(), action_of(rule->transform), rule,
                   [&] { return std::string(action_name(action_of(rule->transform))) + " (null)" + by(rule); });
            continue;
        }
        std::optional<std::string> result;
        findings.clear();
        switch (rule->transform) {
        // These three always give a value (a hash: with a key), which a dry
        // run does not need.
        case Transform::Mask: result = dry ? std::string() : pii::mask(*text, rule->mask_keep); break;
        case Transform::Hash:
            if (has_hash_key_) result = dry ? std::string() : pii::pseudonym(hash_key_, *text);
            break;
        case Transform::Redact:
            result = dry ? std::string() : pii::redact(*text, decisions ? &findings : nullptr);
            break;
        case Transform::GeneralisePostcode: result = pii::postcode_district(*text); break;
        case Transform::GeneraliseMonth: result = pii::date_to_month(*text); break;
        case Transform::GeneraliseAgeBand: result = pii::age_band(*text, now_ms); break;
        case Transform::Keep: break;
        }
        if (!result) {
            // Never the raw value instead.
            dropped_for_value = true;
            if (rule->transform == Transform::Hash)
                decide(leaf.path(), leaf.category(), Action::Dropped, rule,
                       [&] { return "dropped: profile " + name_ + " has no usable hash_key"; });
            else
                decide(leaf.path(), leaf.category(), Action::Dropped, rule,
                       [&] { return std::string("dropped: ") + not_a(rule->transform) + "," + by(rule); });
            continue;
        }
        if (!dry) {
            sb::detail::Leaf& sent = out.data.append_path_of(leaf);
            sent.type = SB_VALUE_STRING;
            sent.str = std::move(*result);
        }
        decide(leaf.path(), leaf.category(), action_of(rule->transform), rule, [&] {
            switch (rule->transform) {
            case Transform::Mask: return "masked" + by(rule);
            case Transform::Hash: return "hashed" + by(rule);
            case Transform::Redact: return "redacted: " + kinds_found(findings) + by(rule);
            default: return std::string("generalised to ") + generalised_to(rule->transform) + by(rule);
            }
        });
    }

    // Copies of one shape made by this profile have the same paths unless
    // a value was dropped: they share a shape of their own.
    if (memo && !dropped_for_value) out.data.assume_shape(memo->copy_shape);
    if (summary && memo) {
        if (!summary_on) { // the memo's, unless this record lost a value
            if (dropped_for_value)
                return apply(in, out, route_has_lawful_basis, now_ms, decisions, summary, false, dry);
            summary->assign(memo->summary);
        } else if (!dropped_for_value && memoised_summary) {
            memo->summary = *summary;
            memo->summary_ready = true;
        }
    }
    summary_on = summary != nullptr; // attachments: always built

    // Attachments: by reference, with keep only.
    const auto& attachments = in.data.attachments();
    std::string path;
    for (std::size_t k = 0; k < attachments.size(); ++k) {
        const AttachmentData& a = attachments[k];
        path = "attachments.";
        path += a.name.empty() ? std::to_string(k) : a.name;
        const FieldRule* rule = rule_for(path);
        if (!route_has_lawful_basis && is_special(a.category)) {
            decide(path, a.category, Action::Dropped, rule, special_dropped);
            continue;
        }
        if (!rule) {
            decide(path, a.category, Action::Dropped, rule, not_in_profile);
            continue;
        }
        if (rule->transform != Transform::Keep) {
            decide(path, a.category, Action::Dropped, rule, [&] {
                return "dropped: attachments are sent by reference with keep only, not " + rule->transform_text +
                       by(rule);
            });
            continue;
        }
        sb_attachment s{};
        s.struct_size = sizeof s;
        s.name = a.name.c_str();
        s.uri = a.uri.c_str();
        s.media_type = a.media_type.c_str();
        s.size = a.size;
        s.sha256 = a.sha256.empty() ? nullptr : a.sha256.c_str();
        s.category = a.category.c_str();
        if (out.data.add_attachment(s) != SB_OK) continue;
        decide(path, a.category, Action::Kept, rule, [&] { return "kept (by reference)" + by(rule); });
    }
    return sent;
}

std::string Profile::summarise(const std::vector<FieldDecision>& decisions) {
    std::string out;
    for (const auto& d : decisions) {
        if (d.action == Action::Dropped) continue;
        if (!out.empty()) out.push_back(',');
        out += d.path;
        out.push_back(':');
        out += d.transform;
    }
    return out;
}

} // namespace switchboard::pipeline
