#pragma once

// Routes: which destinations receive a record of a category (and channel,
// source), for which purpose and through which profile. Compiled once from
// [[route]]; looked up for every record.

#include "config/config.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace switchboard::pipeline {

class Profile;

struct Route {
    int index = 0;        // position in [[route]]
    std::string name;     // as configured; may be empty
    std::string label;    // name, or "route[N]" when unnamed
    std::vector<std::string> categories; // "*" = every category but unclassified
    std::vector<std::string> channels;   // empty: every channel
    std::vector<std::string> sources;    // empty: every source
    std::string destination;
    std::string purpose;
    std::string profile_name;
    std::string lawful_basis;            // empty: none
    const Profile* profile = nullptr;    // set by Policy::compile; null if unknown

    bool has_lawful_basis() const { return !lawful_basis.empty(); }
    // "*" takes every category except "unclassified", which only a route
    // naming it takes: an unclassified record is never sent to everyone.
    bool takes_category(std::string_view category) const;
    // A missing channel or source (empty) passes no filter.
    bool takes(std::string_view category, std::string_view channel, std::string_view source) const;
};

class Router {
public:
    // Compiles [[route]]: reports two routes that could send one record to
    // the same destination. Never throws for config problems.
    static Router compile(const config::Config& config, config::Diagnostics& out);

    // The routes taking a record, in config order, at most one per
    // destination (the first, should a config with errors overlap). `out` is
    // cleared first; reusing it avoids an allocation per record.
    void routes(std::string_view category, std::string_view channel, std::string_view source,
                std::vector<const Route*>& out) const;
    std::vector<const Route*> routes(std::string_view category, std::string_view channel,
                                     std::string_view source) const;

    const std::vector<Route>& all() const { return routes_; }

private:
    friend class Policy; // binds Route::profile once profiles are compiled
    std::vector<Route> routes_;
};

} // namespace switchboard::pipeline
