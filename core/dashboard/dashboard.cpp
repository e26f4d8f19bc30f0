#include "dashboard/dashboard.hpp"

#include "pipeline/retention.hpp"

#include <switchboard/detail/abi.hpp>
#include <switchboard/detail/record_data.hpp>

#include <algorithm>
#include <map>
#include <set>

namespace switchboard::dashboard {

namespace {

// Bounds on what one poll reads from the store, whatever its size.
constexpr std::size_t kNextExpiries = 8;
constexpr std::size_t kExpiryScan = 10000;  // chunks looked at for the 24 h count
constexpr std::size_t kEraseScan = 10000;   // erase tasks looked at
constexpr std::size_t kEraseListed = 20;    // overdue tasks listed one by one
constexpr std::int64_t kDay = 86'400'000;

class Json {
public:
    Json& raw(std::string_view s) {
        out_ += s;
        return *this;
    }
    Json& str(std::string_view s) {
        sb::detail::append_json_string(out_, s);
        return *this;
    }
    Json& key(std::string_view k) {
        comma();
        str(k);
        out_ += ':';
        fresh_ = true;
        return *this;
    }
    Json& num(double v) {
        comma();
        if (v == static_cast<double>(static_cast<std::int64_t>(v)))
            out_ += std::to_string(static_cast<std::int64_t>(v));
        else
            out_ += std::to_string(v);
        return *this;
    }
    Json& num(std::int64_t v) {
        comma();
        out_ += std::to_string(v);
        return *this;
    }
    Json& num(std::uint64_t v) {
        comma();
        out_ += std::to_string(v);
        return *this;
    }
    Json& text(std::string_view s) {
        comma();
        str(s);
        return *this;
    }
    Json& time(std::int64_t ms) { return ms > 0 ? text(sb::detail::format_time(ms)) : null(); }
    Json& null() {
        comma();
        out_ += "null";
        return *this;
    }
    Json& boolean(bool b) {
        comma();
        out_ += b ? "true" : "false";
        return *this;
    }
    Json& open(char c) {
        comma();
        out_ += c;
        fresh_ = true;
        return *this;
    }
    Json& close(char c) {
        out_ += c;
        fresh_ = false;
        return *this;
    }
    Json& strings(const std::vector<std::string>& v) {
        open('[');
        for (const auto& s : v) text(s);
        return close(']');
    }
    std::string take() { return std::move(out_); }

private:
    void comma() {
        if (!fresh_) out_ += ',';
        fresh_ = false;
    }
    std::string out_;
    bool fresh_ = true;
};

} // namespace

Dashboard::Dashboard(const config::Config& config, const pipeline::Policy& policy, store::Store& store,
                     const plugin::Metrics& metrics, Clock clock, http::AccessPolicy access)
    : config_(config), policy_(policy), store_(store), metrics_(metrics), clock_(std::move(clock)),
      access_(std::move(access)) {}

std::string Dashboard::data_json() const {
    const std::int64_t now = clock_();
    auto metric = [&](const std::string& instance, const char* name) { return metrics_.value(instance, name); };
    Json j;
    j.open('{');
    j.key("node").text(config_.node.name);
    j.key("generated_at").time(now);
    j.key("now_ms").num(now);
    j.key("refresh_ms").num(std::int64_t{5000});

    std::vector<std::string> source_names;
    j.key("sources").open('[');
    for (const auto& s : config_.sources) {
        if (!s.enabled) continue;
        source_names.push_back(s.name);
        j.open('{');
        j.key("name").text(s.name);
        j.key("plugin").text(s.plugin);
        for (const char* m : {"records_in", "duplicates", "refused", "quarantined", "cards_redacted"})
            j.key(m).num(metric(s.name, m));
        j.close('}');
    }
    j.close(']');

    // Erase tasks by instance: outstanding and overdue (a receipt not back in time).
    auto tasks = store_.erase_tasks(INT64_MAX, kEraseScan);
    const std::int64_t deadline = config_.retention.receipt_deadline_ms;
    std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> erase_by_instance;
    std::uint64_t overdue_total = 0;
    for (const auto& t : tasks) {
        bool overdue = pipeline::erase_overdue(t, now, deadline);
        auto& e = erase_by_instance[t.instance];
        ++e.first;
        if (overdue) {
            ++e.second;
            ++overdue_total;
        }
    }

    j.key("destinations").open('[');
    for (const auto& d : config_.destinations) {
        if (!d.enabled) continue;
        const std::uint64_t acked = store_.acked(d.name);
        const std::uint64_t last = store_.last_seq(d.name);
        std::int64_t oldest = 0;
        auto rows = store_.outbox_after(d.name, acked, 1);
        if (!rows.empty())
            if (auto info = store_.chunk_info(rows.front().chunk)) oldest = info->created_at;
        j.open('{');
        j.key("name").text(d.name);
        j.key("plugin").text(d.plugin);
        for (const char* m : {"records_out", "dead_lettered", "retries", "pending_timeouts"})
            j.key(m).num(metric(d.name, m));
        j.key("backlog").num(last > acked ? last - acked : 0);
        j.key("acked_seq").num(acked);
        j.key("last_seq").num(last);
        j.key("oldest_unacked_at").time(oldest);
        if (oldest > 0)
            j.key("oldest_unacked_age_ms").num(std::max<std::int64_t>(0, now - oldest));
        else
            j.key("oldest_unacked_age_ms").null();
        auto e = erase_by_instance.find(d.name);
        j.key("erase_tasks").num(e == erase_by_instance.end() ? 0 : e->second.first);
        j.key("erase_tasks_overdue").num(e == erase_by_instance.end() ? 0 : e->second.second);
        j.close('}');
    }
    j.close(']');

    // The flows: one per route, from the sources it takes to its destination, with the
    // fields its profile lets through (patterns and transforms as configured).
    j.key("flows").open('[');
    for (const auto& r : policy_.router().all()) {
        j.open('{');
        j.key("route").text(r.label);
        j.key("sources").strings(r.sources.empty() ? source_names : r.sources);
        j.key("all_sources").boolean(r.sources.empty());
        j.key("categories").strings(r.categories);
        j.key("channels").strings(r.channels);
        j.key("destination").text(r.destination);
        j.key("purpose").text(r.purpose);
        j.key("profile").text(r.profile_name);
        if (r.has_lawful_basis())
            j.key("lawful_basis").text(r.lawful_basis);
        else
            j.key("lawful_basis").null();
        j.key("fields").open('[');
        if (r.profile)
            for (const auto& rule : r.profile->rules()) {
                j.open('{');
                j.key("path").text(rule.pattern.text());
                j.key("transform").text(rule.transform_text);
                j.close('}');
            }
        j.close(']');
        j.close('}');
    }
    j.close(']');

    j.key("erasure").open('{');
    j.key("receipt_deadline_ms").num(deadline);
    j.key("outstanding").num(static_cast<std::uint64_t>(tasks.size()));
    j.key("overdue").num(overdue_total);
    j.key("capped").boolean(tasks.size() >= kEraseScan);
    j.key("overdue_tasks").open('[');
    std::size_t listed = 0;
    for (const auto& t : tasks) {
        if (!pipeline::erase_overdue(t, now, deadline) || listed++ >= kEraseListed) continue;
        std::vector<store::EraseItem> items;
        store::decode_items(t.items, items);
        j.open('{');
        j.key("task").num(t.id);
        j.key("instance").text(t.instance);
        j.key("target").text(t.target == store::EraseTarget::Source ? "vendor copy" : "erase notice");
        j.key("records_left").num(static_cast<std::uint64_t>(items.size() - std::min<std::size_t>(t.done, items.size())));
        j.key("since").time(t.created_at);
        j.key("attempts").num(static_cast<std::uint64_t>(t.attempts));
        j.close('}');
    }
    j.close(']');
    j.close('}');

    j.key("retention").open('{');
    j.key("records_expired").num(metric("retention", "records_expired"));
    j.key("sweep_seconds").num(metric("retention", "sweep_seconds"));
    j.key("sweep_interval_ms").num(config_.retention.sweep_interval_ms);
    auto next = store_.chunks_expiring_before(INT64_MAX, kNextExpiries);
    j.key("next_expiries").open('[');
    for (const auto& ch : next) {
        j.open('{');
        j.key("chunk").num(ch.id);
        j.key("expires_at").time(ch.expires_at);
        j.key("in_ms").num(ch.expires_at - now);
        j.key("records").num(static_cast<std::uint64_t>(ch.count));
        j.close('}');
    }
    j.close(']');
    auto day = store_.chunks_expiring_before(now + kDay, kExpiryScan);
    std::uint64_t within_day = 0;
    for (const auto& ch : day) within_day += ch.count;
    j.key("expiring_within_24h").num(within_day);
    j.key("expiring_within_24h_capped").boolean(day.size() >= kExpiryScan);
    j.close('}');

    j.close('}');
    return j.take();
}

std::string Dashboard::page() const { return render_page(data_json()); }

bool Dashboard::add_routes(http::Server& server) {
    auto common = [](http::Response& r) {
        r.headers.emplace_back("Cache-Control", "no-store");
        r.headers.emplace_back("X-Content-Type-Options", "nosniff");
        r.headers.emplace_back("Referrer-Policy", "no-referrer");
    };
    bool ok = server.add_route(
        "GET", "/dashboard",
        [this, common](const http::Request& req, http::Response& r) {
            if (!http::require_access(access_, req, r)) return;
            if (req.path != "/dashboard" && req.path != "/dashboard/") {
                r.respond(404, "application/json", "{\"error\":\"no such dashboard page\"}");
                return;
            }
            common(r);
            // Nothing but the page itself: no external script, style, image or frame.
            r.headers.emplace_back("Content-Security-Policy",
                                   "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                                   "connect-src 'self'; img-src data:; frame-ancestors 'none'");
            r.respond(200, "text/html; charset=utf-8", page());
        },
        "dashboard");
    ok = server.add_route(
             "GET", "/dashboard/data.json",
             [this, common](const http::Request& req, http::Response& r) {
                 if (!http::require_access(access_, req, r)) return;
                 common(r);
                 r.respond(200, "application/json", data_json());
             },
             "dashboard") &&
         ok;
    return ok;
}

} // namespace switchboard::dashboard
