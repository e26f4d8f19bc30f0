#include "admin/node_endpoints.hpp"

#include "audit/audit_log.hpp"
#include "pipeline/journal.hpp"
#include "plugin/instance.hpp"
#include "plugin/library.hpp"
#include "store/store.hpp"
#include "util/text.hpp"

#include <Poco/Exception.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

namespace switchboard::admin {

namespace {

using plugin::kind_name;

std::string num(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    if (v == std::floor(v) && std::fabs(v) < 1e15) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%" PRId64, static_cast<std::int64_t>(v));
        return buf;
    }
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

// Label values: backslash, double quote and line feed escaped (format 0.0.4).
std::string label_value(std::string_view v) {
    std::string out;
    for (char c : v) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out.push_back(c);
    }
    return out;
}

// One metric family: HELP and TYPE once, then its samples.
class Exposition {
public:
    void family(const std::string& name, const char* type, const char* help) {
        out_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
        current_ = name;
    }
    void sample(const std::vector<std::pair<const char*, std::string>>& labels, double value) {
        out_ += current_;
        if (!labels.empty()) {
            out_ += "{";
            bool first = true;
            for (const auto& [k, v] : labels) {
                out_ += (first ? "" : ",") + std::string(k) + "=\"" + label_value(v) + "\"";
                first = false;
            }
            out_ += "}";
        }
        out_ += " " + num(value) + "\n";
    }
    std::string take() { return std::move(out_); }

private:
    std::string out_, current_;
};

// The core's per-instance counters: metric name in Metrics, exported name,
// which kinds have it, help.
struct CoreCounter {
    const char* key;
    const char* name;
    bool source, destination;
    const char* help;
};
constexpr CoreCounter kCounters[] = {
    {"records_in", "switchboard_records_in_total", true, false, "Records taken from a source and committed."},
    {"records_out", "switchboard_records_out_total", false, true, "Records delivered to a destination and acknowledged."},
    {"dead_lettered", "switchboard_records_dead_lettered_total", false, true,
     "Deliveries given up on (permanent error or attempts exhausted)."},
    {"quarantined", "switchboard_records_quarantined_total", true, false, "Unreadable inputs kept in quarantine."},
    {"refused", "switchboard_records_refused_total", true, false,
     "Records refused at ingest (invalid, empty or already expired)."},
    {"duplicates", "switchboard_records_duplicate_total", true, false,
     "Records dropped as repeats of an idempotency key already taken."},
    {"erase_steps", "switchboard_records_erased_total", true, true,
     "Records erased (or confirmed erased) at the instance, by retention or on request."},
    {"retries", "switchboard_delivery_retries_total", false, true, "Deliveries retried after a transient error."},
    {"pending_timeouts", "switchboard_delivery_pending_timeouts_total", false, true,
     "Pending deliveries that timed out and were handed over again."},
    {"read_back", "switchboard_delivery_read_back_total", false, true,
     "Outbox entries a destination read back from the store because it had fallen behind."},
    {"copies_deferred", "switchboard_delivery_copies_deferred_total", false, true,
     "Minimised copies not made at ingest because the destination had fallen behind (made from the store)."},
    {"cards_redacted", "switchboard_cards_redacted_total", true, false, "Payment card numbers redacted at ingest."},
};

bool is_core_key(const std::string& key) {
    if (key == "erase_tasks_overdue" || key == "erase_awaiting_checks") return true;
    return std::any_of(std::begin(kCounters), std::end(kCounters),
                       [&](const CoreCounter& c) { return key == c.key; });
}

const plugin::Instance* find(const Node& node, const std::string& name, sb_plugin_kind kind) {
    for (const auto* i : node.instances)
        if (i->name() == name && i->config().kind == kind) return i;
    return nullptr;
}

std::vector<const plugin::Instance*> destinations(const Node& node) {
    std::vector<const plugin::Instance*> out;
    for (const auto* i : node.instances)
        if (i->config().kind == SB_KIND_DESTINATION) out.push_back(i);
    return out;
}

struct OutboxState {
    std::uint64_t depth = 0;
    std::int64_t oldest_ms = 0; // when the oldest unacknowledged record was committed; 0 none
};

OutboxState outbox_state(store::Store& st, const std::string& dest) {
    OutboxState s;
    s.depth = st.count_outbox_pending(dest);
    if (s.depth == 0) return s;
    auto rows = st.outbox_after(dest, st.acked(dest), 1);
    if (!rows.empty())
        if (auto info = st.chunk_info(rows.front().chunk)) s.oldest_ms = info->created_at;
    return s;
}

double age_seconds(std::int64_t now, std::int64_t then) {
    return then > 0 && now > then ? static_cast<double>(now - then) / 1000.0 : 0.0;
}

void health(const Node& node, http::Response& r) {
    std::string body = "{\"node\":" + json_string(node.name) + ",\"status\":\"" +
                       (node.ready && *node.ready ? "ready" : "starting") + "\",\"uptime_seconds\":" +
                       num(age_seconds(node.clock(), node.started_at)) + ",\"instances\":[";
    bool first = true;
    for (const auto* i : node.instances) {
        body += std::string(first ? "" : ",") + "{\"name\":" + json_string(i->name()) +
                ",\"plugin\":" + json_string(i->config().plugin) + ",\"kind\":\"" + kind_name(i->config().kind) +
                "\",\"version\":" + json_string(i->descriptor().version ? i->descriptor().version : "") +
                ",\"running\":" + (i->running() ? "true" : "false") + "}";
        first = false;
    }
    r.respond(200, "application/json", body + "]}");
}

void list_dead_letters(const Node& node, const Call& call, http::Response& r) {
    std::string dest = query_param(call.request.query, "destination");
    if (!dest.empty() && !find(node, dest, SB_KIND_DESTINATION))
        return respond_error(r, 404, "no destination named '" + dest + "'");
    auto letters = node.journal->store().dead_letters(dest);
    std::string body = "{\"dead_letters\":[";
    bool first = true;
    for (const auto& d : letters) {
        body += std::string(first ? "" : ",") + "{\"id\":" + std::to_string(d.id) +
                ",\"destination\":" + json_string(d.destination) + ",\"seq\":" + std::to_string(d.seq) +
                ",\"record_id\":" + json_string(d.record_id) + ",\"attempts\":" + std::to_string(d.attempts) +
                ",\"error\":" + json_string(d.error) + ",\"retry_requested\":" + (d.retry ? "true" : "false") +
                ",\"dead_at\":" + json_string(text::format_time_ms(d.dead_at)) +
                ",\"expires_at\":" + json_string(text::format_time_ms(d.expires_at)) + "}";
        first = false;
    }
    r.respond(200, "application/json", body + "],\"count\":" + std::to_string(letters.size()) + "}");
}

// {"ids": [1, 2]} or {"all": true}, either with "destination": NAME.
void retry_dead_letters(const Node& node, const Call& call, http::Response& r) {
    std::vector<std::int64_t> ids;
    bool all = false;
    std::string dest;
    try {
        Poco::JSON::Parser parser;
        auto v = parser.parse(call.request.body.empty() ? std::string("{}") : call.request.body);
        auto obj = v.extract<Poco::JSON::Object::Ptr>();
        for (const auto& key : obj->getNames())
            if (key != "ids" && key != "all" && key != "destination")
                return respond_error(r, 400, "unknown key '" + key.substr(0, 40) + "'; use ids, all, destination");
        if (obj->has("destination")) {
            if (!obj->get("destination").isString()) return respond_error(r, 400, "destination: expected a string");
            dest = obj->getValue<std::string>("destination");
        }
        if (obj->has("all")) {
            if (!obj->get("all").isBoolean()) return respond_error(r, 400, "all: expected true or false");
            all = obj->getValue<bool>("all");
        }
        if (obj->has("ids")) {
            auto arr = obj->getArray("ids");
            if (!arr) return respond_error(r, 400, "ids: expected an array of dead letter ids");
            for (std::size_t i = 0; i < arr->size(); ++i) {
                auto e = arr->get(static_cast<unsigned>(i));
                if (!e.isInteger()) return respond_error(r, 400, "ids[" + std::to_string(i) + "]: expected an integer id");
                ids.push_back(e.convert<std::int64_t>());
            }
        }
    } catch (const Poco::Exception&) {
        return respond_error(r, 400, "body: expected a JSON object such as {\"ids\":[1,2]} or {\"all\":true}");
    } catch (const std::exception&) {
        return respond_error(r, 400, "body: expected a JSON object such as {\"ids\":[1,2]} or {\"all\":true}");
    }
    if (all == !ids.empty())
        return respond_error(r, 400, "give either ids (a non-empty array) or \"all\": true");
    if (!dest.empty() && !find(node, dest, SB_KIND_DESTINATION))
        return respond_error(r, 404, "no destination named '" + dest + "'");
    if (all)
        for (const auto& d : node.journal->store().dead_letters(dest)) ids.push_back(d.id);
    std::vector<std::int64_t> asked, missing;
    bool ok = node.journal->submit_and_wait([&](store::Txn& t, audit::AuditLog&) {
        asked.clear();
        missing.clear();
        for (auto id : ids) (t.request_retry(id) ? asked : missing).push_back(id);
    });
    if (!ok) return respond_error(r, 503, "the journal could not commit the request; see the node's log");
    auto list = [](const std::vector<std::int64_t>& v) {
        std::string s = "[";
        for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
        return s + "]";
    };
    r.respond(missing.empty() ? 200 : 404, "application/json",
              "{\"retry_requested\":" + list(asked) + ",\"not_found\":" + list(missing) + "}");
}

void verify_audit(const Node& node, http::Response& r) {
    // What the journal committed reaches the files first, so the chain is
    // checked up to the head it keeps.
    node.journal->flush_audit();
    auto& st = node.journal->store();
    std::optional<audit::Head> head;
    try {
        head = pipeline::committed_audit_head(st);
    } catch (const std::exception&) {
        return respond_error(r, 500, "the journal's audit head is malformed");
    }
    auto saved = st.pending_audit();
    auto result = audit::AuditLog::verify(node.audit->dir(), saved.empty() ? head : std::nullopt);
    std::string problems = "[";
    bool first = true;
    for (const auto& p : result.problems) {
        problems += std::string(first ? "" : ",") + "{\"file\":" + json_string(p.file) + ",\"line\":" +
                    std::to_string(p.line) + ",\"seq\":" + std::to_string(p.seq) + ",\"what\":" + json_string(p.what) + "}";
        first = false;
    }
    problems += "]";
    r.respond(result.ok ? 200 : 409, "application/json",
              std::string("{\"ok\":") + (result.ok ? "true" : "false") + ",\"entries\":" +
                  std::to_string(result.entries) + ",\"files\":" + std::to_string(result.files) +
                  ",\"last_seq\":" + std::to_string(result.last.seq) + ",\"journal_head\":" +
                  (head ? std::to_string(head->seq) : "null") + ",\"unwritten\":" + std::to_string(saved.size()) +
                  ",\"problems\":" + problems + "}");
}

void outbox(const Node& node, http::Response& r) {
    auto& st = node.journal->store();
    std::int64_t now = node.clock();
    std::string body = "{\"destinations\":[";
    bool first = true;
    for (const auto* d : destinations(node)) {
        auto s = outbox_state(st, d->name());
        body += std::string(first ? "" : ",") + "{\"destination\":" + json_string(d->name()) +
                ",\"depth\":" + std::to_string(s.depth) + ",\"oldest_unacknowledged_age_seconds\":" +
                num(age_seconds(now, s.oldest_ms)) + ",\"acknowledged_seq\":" + std::to_string(st.acked(d->name())) +
                ",\"last_seq\":" + std::to_string(st.last_seq(d->name())) +
                ",\"dead_letters\":" + std::to_string(st.dead_letters(d->name()).size()) + "}";
        first = false;
    }
    r.respond(200, "application/json", body + "]}");
}

} // namespace

bool add_node_endpoints(AdminApi& api, const Node& node) {
    bool ok = true;
    ok &= api.add("GET", "health", [&node](const Call&, http::Response& r) { health(node, r); });
    ok &= api.add("GET", "deadletters",
                  [&node](const Call& c, http::Response& r) { list_dead_letters(node, c, r); });
    ok &= api.add("POST", "deadletters/retry",
                  [&node](const Call& c, http::Response& r) { retry_dead_letters(node, c, r); });
    ok &= api.add("GET", "audit/verify", [&node](const Call&, http::Response& r) { verify_audit(node, r); });
    ok &= api.add("GET", "outbox", [&node](const Call&, http::Response& r) { outbox(node, r); });
    return ok;
}

std::string render_metrics(const Node& node) {
    Exposition e;
    std::int64_t now = node.clock();
    std::map<std::string, const plugin::Instance*> by_name;
    for (const auto* i : node.instances) by_name[i->name()] = i;
    auto samples = node.metrics->snapshot();
    std::map<std::pair<std::string, std::string>, double> values;
    for (const auto& s : samples) values[{s.instance, s.name}] = s.value;
    auto value = [&](const std::string& instance, const std::string& key) {
        auto it = values.find({instance, key});
        return it == values.end() ? 0.0 : it->second;
    };
    auto labels = [](const plugin::Instance* i) {
        return std::vector<std::pair<const char*, std::string>>{
            {"instance", i->name()}, {"plugin", i->config().plugin}, {"kind", kind_name(i->config().kind)}};
    };

    e.family("switchboard_ready", "gauge", "1 once every instance has started, 0 while starting or stopping.");
    e.sample({}, node.ready && *node.ready ? 1 : 0);

    for (const auto& c : kCounters) {
        e.family(c.name, "counter", c.help);
        for (const auto& [name, i] : by_name) {
            bool has = (i->config().kind == SB_KIND_SOURCE && c.source) ||
                       (i->config().kind == SB_KIND_DESTINATION && c.destination);
            if (has) e.sample(labels(i), value(name, c.key));
        }
    }

    e.family("switchboard_erase_tasks_overdue", "gauge",
             "Erase tasks at the instance unconfirmed past retention.receipt_deadline (missing receipts).");
    for (const auto& [name, i] : by_name)
        if (i->config().kind != SB_KIND_TRANSFORM) e.sample(labels(i), value(name, "erase_tasks_overdue"));

    auto& st = node.journal->store();
    auto tasks = st.erase_tasks(INT64_MAX, 100000);
    std::map<std::string, std::uint64_t> pending;
    for (const auto& t : tasks) ++pending[t.instance];
    e.family("switchboard_erase_tasks_pending", "gauge", "Erase tasks not yet confirmed by the instance.");
    for (const auto& [name, i] : by_name)
        if (i->config().kind != SB_KIND_TRANSFORM)
            e.sample(labels(i), static_cast<double>(pending.count(name) ? pending[name] : 0));

    std::vector<std::pair<std::string, OutboxState>> outboxes;
    for (const auto* d : destinations(node)) outboxes.emplace_back(d->name(), outbox_state(st, d->name()));
    e.family("switchboard_outbox_depth", "gauge", "Records waiting in the outbox, not yet acknowledged.");
    for (const auto& [name, s] : outboxes) e.sample({{"destination", name}}, static_cast<double>(s.depth));
    e.family("switchboard_outbox_oldest_unacknowledged_age_seconds", "gauge",
             "Age of the oldest record in the outbox not yet acknowledged; 0 when empty.");
    for (const auto& [name, s] : outboxes) e.sample({{"destination", name}}, age_seconds(now, s.oldest_ms));
    e.family("switchboard_dead_letters", "gauge", "Dead letters held (until they expire or are retried).");
    for (const auto* d : destinations(node))
        e.sample({{"destination", d->name()}}, static_cast<double>(st.dead_letters(d->name()).size()));

    auto expired = st.expired_chunks(now, 1);
    e.family("switchboard_retention_lag_seconds", "gauge",
             "How long the oldest expired record (not under a hold) has waited for deletion; 0 when none.");
    e.sample({}, expired.empty() ? 0.0 : age_seconds(now, expired.front().expires_at));
    e.family("switchboard_retention_sweep_duration_seconds", "gauge", "Duration of the last retention sweep.");
    e.sample({}, value("retention", "sweep_seconds"));
    e.family("switchboard_records_expired_total", "counter", "Records deleted by retention when they expired.");
    e.sample({}, value("retention", "records_expired"));
    e.family("switchboard_records_erased_on_request_total", "counter",
             "Records erased ahead of their expiry on request (switchboard erase, POST erasures).");
    e.sample({}, value("retention", "records_erased_on_request"));

    e.family("switchboard_audit_entries_total", "counter", "Entries appended to the audit trail (its head seq).");
    e.sample({}, static_cast<double>(node.audit->last_seq()));

    // What plugins count themselves (sb_host_api metric_add / metric_set).
    std::map<std::string, std::vector<const plugin::Metrics::Sample*>> own;
    for (const auto& s : samples)
        if (by_name.count(s.instance) && !is_core_key(s.name)) own[s.name].push_back(&s);
    for (const auto& [key, list] : own) {
        bool counter = list.front()->counter;
        std::string name = "switchboard_plugin_" + key + (counter ? "_total" : "");
        e.family(name, counter ? "counter" : "gauge", "Reported by the plugin itself; see its README.");
        for (const auto* s : list)
            if (s->counter == counter) e.sample(labels(by_name[s->instance]), s->value);
    }
    return e.take();
}

bool add_metrics_route(http::Server& server, const Node& node, const AdminApi* api, AdminApi::AuditFn audit) {
    return server.add_route(
        "GET", "/metrics",
        [&node, api, audit](const http::Request& q, http::Response& r) {
            if (q.path != "/metrics") return respond_error(r, 404, "no such route");
            if (api && !api->authenticate(q)) {
                r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"switchboard-admin\"");
                respond_error(r, 401, "a valid admin token is required (admin.metrics_auth is true)");
                if (audit) audit({"-", "GET", "/metrics", 401});
                return;
            }
            r.respond(200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(node));
        },
        "admin");
}

} // namespace switchboard::admin
