#pragma once
// The dashboard: one self-contained page at /dashboard (inline CSS, script and SVG; nothing
// fetched from elsewhere) and its data at /dashboard/data.json, on the daemon's HTTP
// listener. It shows the data flows the config sets up (sources -> departments, with the
// fields each receives, from the routes and profiles), records in and out per instance (the
// core's counters), each destination's backlog and oldest unacknowledged record (the
// outbox), erase tasks awaiting receipts (overdue past retention.receipt_deadline) and the
// next expiries (the store's chunk index). Counts, field paths, ids and times only: never a
// value from a record.

#include "config/config.hpp"
#include "http/access.hpp"
#include "http/server.hpp"
#include "pipeline/policy.hpp"
#include "plugin/instance.hpp"
#include "store/store.hpp"

#include <cstdint>
#include <functional>
#include <string>

namespace switchboard::dashboard {

class Dashboard {
public:
    using Clock = std::function<std::int64_t()>; // Unix ms

    Dashboard(const config::Config& config, const pipeline::Policy& policy, store::Store& store,
              const plugin::Metrics& metrics, Clock clock, http::AccessPolicy access);

    // GET /dashboard and GET /dashboard/data.json, owner "dashboard". False if either
    // could not be added (the server logs why).
    bool add_routes(http::Server& server);

    // The data, as served at /dashboard/data.json.
    std::string data_json() const;
    // The page with the data at `now` embedded (it refreshes itself from data.json).
    std::string page() const;

private:
    const config::Config& config_;
    const pipeline::Policy& policy_;
    store::Store& store_;
    const plugin::Metrics& metrics_;
    Clock clock_;
    http::AccessPolicy access_;
};

// The page around its data: `data_json` goes into a <script type="application/json">.
std::string render_page(const std::string& data_json);

} // namespace switchboard::dashboard
