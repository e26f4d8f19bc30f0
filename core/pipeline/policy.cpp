#include "pipeline/policy.hpp"

#include "util/text.hpp"

#include <algorithm>
#include <set>

namespace switchboard::pipeline {

namespace {

// Element `index` of an array of tables: root[section] (or
// root[section][key] when `key` is given), for diagnostics' locations.
const toml::table* element_table(const config::Config& config, std::string_view section, std::string_view key,
                                 int index) {
    const toml::node* n = config.root.get(section);
    if (n && !key.empty()) n = n->as_table() ? n->as_table()->get(key) : nullptr;
    const toml::array* list = n ? n->as_array() : nullptr;
    if (!list || index < 0 || static_cast<std::size_t>(index) >= list->size()) return nullptr;
    return (*list)[static_cast<std::size_t>(index)].as_table();
}

} // namespace

std::unique_ptr<Policy> Policy::compile(const config::Config& config, config::Diagnostics& out) {
    std::unique_ptr<Policy> p(new Policy());
    p->classifier_ = Classifier::compile(config, out);
    p->router_ = Router::compile(config, out);
    for (const auto& d : config.destinations) p->destinations_.push_back(d.name);

    const toml::node* section = config.root.get("profiles");
    if (const toml::table* profiles = section ? section->as_table() : nullptr)
        for (auto&& [key, value] : *profiles) {
            const toml::table* t = value.as_table();
            if (!t) continue; // reported by the schema
            std::string name(key.str());
            auto secret = config.secrets.find(config::join_path("profiles", name) + ".hash_key");
            p->profiles_.emplace(name, Profile::compile(name, *t, secret == config.secrets.end() ? nullptr
                                                                                                  : &secret->second,
                                                        out));
        }

    // Categories the classifier can give, for the checks below: from every
    // rule as written, so that a rule with an error does not also make the
    // routes for its category look useless.
    std::set<std::string, std::less<>> given;
    for (int i = 0; const toml::table* rule = element_table(config, "classify", "rule", i); ++i)
        if (auto* c = rule->get("category"); c && c->is_string()) given.insert(c->as_string()->get());

    std::set<std::string, std::less<>> used_profiles, used_destinations, taken_categories;
    bool takes_every_category = false;
    for (Route& route : p->router_.routes_) {
        const toml::table* t = element_table(config, "route", "", route.index);
        const std::string path = "route[" + std::to_string(route.index) + "]";
        used_profiles.insert(route.profile_name);
        used_destinations.insert(route.destination);
        for (const auto& c : route.categories) {
            taken_categories.insert(c);
            takes_every_category = takes_every_category || c == "*";
            if (c != "*" && c != kUnclassified && !given.count(c) && t && t->get("category"))
                out.warn(config::location_of(*t->get("category")), path + ".category",
                         "no [[classify.rule]] gives category '" + c + "', so this route never takes a record" +
                             (given.empty() ? "" : " (categories: " +
                                                       text::join(std::vector<std::string>(given.begin(), given.end()),
                                                                  ", ") +
                                                       ")"));
        }
        auto found = p->profiles_.find(route.profile_name);
        if (found == p->profiles_.end()) continue; // reported by the config loader
        route.profile = &found->second;
        // Principle 1: special-category data needs an explicit lawful basis.
        if (route.profile->could_send_special() && !route.has_lawful_basis() && t)
            out.error(config::location_of(*t), path,
                      "sends profile '" + route.profile_name + "', which can pass special-category fields (" +
                          text::join(route.profile->special_patterns(), ", ") +
                          "), but has no lawful_basis; name the UK GDPR Art. 9 condition in lawful_basis, or "
                          "remove those fields from the profile");
    }

    // A category the classifier gives but no route takes: such records are
    // journalled and expire, but nobody sees them. Worth a warning, once.
    std::set<std::string, std::less<>> warned;
    for (const auto& rule : p->classifier_.rules()) {
        if (takes_every_category || taken_categories.count(rule.category) || !warned.insert(rule.category).second)
            continue;
        const toml::table* t = element_table(config, "classify", "rule", rule.index);
        const toml::node* c = t ? t->get("category") : nullptr;
        if (c)
            out.warn(config::location_of(*c), "classify.rule[" + std::to_string(rule.index) + "].category",
                     "no route takes category '" + rule.category + "': its records go nowhere");
    }

    if (const toml::table* profiles = section ? section->as_table() : nullptr)
        for (auto&& [key, value] : *profiles)
            if (!used_profiles.count(key.str()))
                out.warn(config::location_of(value), config::join_path("profiles", key.str()),
                         "is not used by any route");
    for (const auto& d : config.destinations)
        if (!used_destinations.count(d.name))
            out.warn(d.where, d.key_path, "no route sends records to this destination");
    return p;
}

const Profile* Policy::profile(std::string_view name) const {
    auto it = profiles_.find(name);
    return it == profiles_.end() ? nullptr : &it->second;
}

void Policy::decide(const sb_record& record, Decision& out) const {
    out.classified = classifier_.classify(record);
    const char* channel = record.data.meta("channel");
    const char* source = record.data.meta("source");
    router_.routes(out.classified.category, channel ? channel : "", source ? source : "", out.routes);
}

Policy::Decision Policy::decide(const sb_record& record) const {
    Decision d;
    decide(record, d);
    return d;
}

} // namespace switchboard::pipeline
