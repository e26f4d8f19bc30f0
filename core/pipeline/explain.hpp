#pragma once

// `switchboard explain`: what a record would become, for the IT officer who
// must show that each route is proportionate. Shows the category and the
// rule that gave it, the routes taken, and per destination the exact
// payload it would receive plus the decision on every input field; then the
// destinations that receive nothing, and why.

#include "pipeline/policy.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace switchboard::pipeline {

// Plain text, aligned columns, stable order: routes in config order, then
// `all_destinations` that receive nothing, in the order given. `now_ms`
// dates age bands. The report holds the minimised payloads, so it carries
// personal data of the record explained: it is for the operator's terminal,
// never for a log.
std::string explain(const Policy& policy, const sb_record& record, std::int64_t now_ms,
                    const std::vector<std::string>& all_destinations);

} // namespace switchboard::pipeline
