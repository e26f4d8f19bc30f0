#pragma once

// The core's own admin endpoints and /metrics, over what a running node has:
// its instances, journal, audit trail and counters.

#include "admin/admin_api.hpp"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace switchboard {
namespace audit {
class AuditLog;
}
namespace pipeline {
class Journal;
}
namespace plugin {
class Instance;
class Metrics;
} // namespace plugin
} // namespace switchboard

namespace switchboard::admin {

// What the endpoints read. Everything outlives the AdminApi's stop().
struct Node {
    std::string name;
    const std::atomic<bool>* ready = nullptr;
    std::vector<const plugin::Instance*> instances;
    pipeline::Journal* journal = nullptr;
    audit::AuditLog* audit = nullptr;
    const plugin::Metrics* metrics = nullptr;
    std::function<std::int64_t()> clock; // Unix ms
    std::int64_t started_at = 0;         // Unix ms
    std::int64_t receipt_deadline_ms = 7LL * 86'400'000; // retention.receipt_deadline
};

// GET health, GET deadletters, POST deadletters/retry, GET audit/verify,
// GET outbox. False if one could not be added (a name taken).
bool add_node_endpoints(AdminApi& api, const Node& node);

// The node's metrics in the Prometheus text format, version 0.0.4.
std::string render_metrics(const Node& node);

// GET /metrics on `server`. With `api` (metrics_auth), a scrape needs an
// admin token (any, read-only suffices); refusals are audited through
// `audit`, answered scrapes are not (a scraper every 15 s would bury the
// trail). Returns false if the route is taken.
bool add_metrics_route(http::Server& server, const Node& node, const AdminApi* api,
                       AdminApi::AuditFn audit);

} // namespace switchboard::admin
