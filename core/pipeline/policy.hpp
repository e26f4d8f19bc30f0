#pragma once

// The policy compiled from the config: classification, routes and
// proportionality profiles, with the checks that need more than one section
// (a route sending special-category data without a lawful basis, a hash
// without a key, two routes sending one record to one destination, unused
// profiles and destinations). `switchboard check` prints what compile()
// reports; `run` refuses to start on an error.

#include "config/config.hpp"
#include "pipeline/classifier.hpp"
#include "pipeline/profile.hpp"
#include "pipeline/router.hpp"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::pipeline {

class Policy {
public:
    // Builds the policy from a loaded config (after config::resolve_secrets,
    // so hash keys are known). Never throws for config problems: they go to
    // `out`. Always returns a policy; with errors in `out` it must not be
    // used to deliver.
    static std::unique_ptr<Policy> compile(const config::Config& config, config::Diagnostics& out);

    Policy(const Policy&) = delete;
    Policy& operator=(const Policy&) = delete;

    const Classifier& classifier() const { return classifier_; }
    const Router& router() const { return router_; }
    const Profile* profile(std::string_view name) const;
    const std::map<std::string, Profile, std::less<>>& profiles() const { return profiles_; }
    // Destination instance names, in config order.
    const std::vector<std::string>& destinations() const { return destinations_; }

    struct Decision {
        ClassifyResult classified;
        std::vector<const Route*> routes; // each with its Route::profile
    };
    // Classifies a record and finds its routes (by the record's channel and
    // source meta). The second form reuses `out`'s storage.
    Decision decide(const sb_record& record) const;
    void decide(const sb_record& record, Decision& out) const;

private:
    Policy() = default;

    Classifier classifier_;
    Router router_;
    std::map<std::string, Profile, std::less<>> profiles_;
    std::vector<std::string> destinations_;
};

} // namespace switchboard::pipeline
