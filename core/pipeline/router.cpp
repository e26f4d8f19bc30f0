#include "pipeline/router.hpp"

#include "pipeline/classifier.hpp"
#include "util/text.hpp"

#include <algorithm>
#include <optional>

namespace switchboard::pipeline {

namespace {

// The channels of docs/configuration.md. Others are allowed, with a
// warning, since a new source plugin may bring a new one.
const std::vector<std::string> kChannels = {"phone", "web_chat", "whatsapp", "email", "visit"};

std::vector<std::string> strings_of(const toml::node* n) {
    std::vector<std::string> out;
    if (!n) return out;
    if (n->is_string()) out.push_back(n->as_string()->get());
    if (const toml::array* a = n->as_array())
        for (const auto& e : *a)
            if (e.is_string()) out.push_back(e.as_string()->get());
    return out;
}

std::string string_at(const toml::table& t, std::string_view key) {
    if (auto* n = t.get(key); n && n->is_string()) return n->as_string()->get();
    return {};
}

bool contains(const std::vector<std::string>& list, std::string_view s) {
    return std::find(list.begin(), list.end(), s) != list.end();
}

// Filters overlap when either is unset or they share a value.
bool filters_overlap(const std::vector<std::string>& a, const std::vector<std::string>& b) {
    if (a.empty() || b.empty()) return true;
    return std::any_of(a.begin(), a.end(), [&](const std::string& s) { return contains(b, s); });
}

// A category both routes take, if any ("*" when both take every category).
std::optional<std::string> shared_category(const Route& a, const Route& b) {
    for (const auto& ca : a.categories)
        for (const auto& cb : b.categories) {
            if (ca == cb) return ca;
            if (ca == "*" && cb != kUnclassified) return cb;
            if (cb == "*" && ca != kUnclassified) return ca;
        }
    return std::nullopt;
}

} // namespace

bool Route::takes_category(std::string_view category) const {
    for (const auto& c : categories) {
        if (c == category) return true;
        if (c == "*" && category != kUnclassified) return true;
    }
    return false;
}

bool Route::takes(std::string_view category, std::string_view channel, std::string_view source) const {
    if (!takes_category(category)) return false;
    if (!channels.empty() && (channel.empty() || !contains(channels, channel))) return false;
    if (!sources.empty() && (source.empty() || !contains(sources, source))) return false;
    return true;
}

Router Router::compile(const config::Config& config, config::Diagnostics& out) {
    Router router;
    const toml::node* section = config.root.get("route");
    const toml::array* list = section ? section->as_array() : nullptr;
    if (!list) return router;

    std::vector<std::string> known_sources;
    for (const auto& s : config.sources) known_sources.push_back(s.name);

    for (std::size_t i = 0; i < list->size(); ++i) {
        const toml::table* t = (*list)[i].as_table();
        if (!t) continue;
        const std::string path = "route[" + std::to_string(i) + "]";
        Route r;
        r.index = static_cast<int>(i);
        r.name = string_at(*t, "name");
        r.label = r.name.empty() ? path : r.name;
        r.categories = strings_of(t->get("category"));
        r.channels = strings_of(t->get("channel"));
        r.sources = strings_of(t->get("source"));
        r.destination = string_at(*t, "destination");
        r.purpose = string_at(*t, "purpose");
        r.profile_name = string_at(*t, "profile");
        // Blank text is no lawful basis.
        r.lawful_basis = std::string(text::trim(string_at(*t, "lawful_basis")));

        if (auto* n = t->get("category"); n && r.categories.empty())
            out.warn(config::location_of(*n), path + ".category", "is empty: this route takes no record");
        for (const auto& ch : r.channels)
            if (!contains(kChannels, ch))
                out.warn(config::location_of(*t->get("channel")), path + ".channel",
                         "unknown channel '" + ch + "' (known: " + text::join(kChannels, ", ") + ")");
        for (const auto& s : r.sources)
            if (!contains(known_sources, s))
                out.warn(config::location_of(*t->get("source")), path + ".source",
                         "no source named '" + s + "' in [sources]");
        if (!r.name.empty())
            for (const Route& other : router.routes_)
                if (other.name == r.name)
                    out.warn(config::location_of(*t->get("name")), path + ".name",
                             "name already used by route[" + std::to_string(other.index) +
                                 "]; explain and the audit trail could not tell them apart");

        // One record, one copy per destination: two routes to the same
        // destination must not be able to take the same record.
        if (!r.destination.empty())
            for (std::size_t k = 0; k < router.routes_.size(); ++k) {
                const Route& other = router.routes_[k];
                if (other.destination != r.destination) continue;
                auto shared = shared_category(other, r);
                if (!shared || !filters_overlap(other.channels, r.channels) ||
                    !filters_overlap(other.sources, r.sources))
                    continue;
                std::string what = *shared == "*" ? "every category" : "category '" + *shared + "'";
                std::string other_name = "route[" + std::to_string(other.index) + "]" +
                                         (other.name.empty() ? "" : " (" + other.name + ")");
                out.error(config::location_of(*t->get("destination")), path + ".destination",
                          "'" + r.destination + "' already receives " + what + " from " + other_name +
                              ", so a record would be sent twice; make their categories, channels or "
                              "sources disjoint");
                break;
            }
        router.routes_.push_back(std::move(r));
    }
    return router;
}

void Router::routes(std::string_view category, std::string_view channel, std::string_view source,
                    std::vector<const Route*>& out) const {
    out.clear();
    for (const Route& r : routes_) {
        if (!r.takes(category, channel, source)) continue;
        bool seen = false;
        for (const Route* o : out) seen = seen || o->destination == r.destination;
        if (!seen) out.push_back(&r);
    }
}

std::vector<const Route*> Router::routes(std::string_view category, std::string_view channel,
                                         std::string_view source) const {
    std::vector<const Route*> out;
    routes(category, channel, source, out);
    return out;
}

} // namespace switchboard::pipeline
