// memory-source: a test source that makes synthetic records.
//
// poll() emits up to `count` numbered records, one per `interval` of host
// time; the number emitted is committed with each record (emit_batch cursor
// "emitted"), so a restarted instance carries on where it stopped.
// POST /hooks/memory/<instance> turns a body of `path<TAB>category<TAB>value`
// lines into one record. Everything it makes is synthetic, but it logs only
// counts and ids, as a real plugin must.
#include <switchboard/plugin.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace {

bool is_category(std::string_view s) {
    for (char c : s)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
            return false;
    return true;
}

// Idempotency keys become external ids: short, visible ASCII.
bool is_key(std::string_view s) {
    if (s.empty() || s.size() > 128) return false;
    for (char c : s)
        if (c <= ' ' || c > '~') return false;
    return true;
}

class MemorySource : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "memory-source";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "Test source: synthetic records on poll and from an HTTP hook";
        i.kind = SB_KIND_SOURCE;
        i.capabilities = SB_CAP_HTTP;
        i.data_categories = {"identity.name", "contact.email", "content.free_text",
                             "reference.internal", "classification.hint"};
        i.config = {
            sb::Field::integer("count").min(0).fallback("10").describe(
                "How many synthetic records to emit in total"),
            sb::Field::duration("interval").min(0).fallback("\"100ms\"").describe(
                "Least host time between two synthetic records"),
            sb::Field::string("channel").fallback("\"test\"").describe(
                "Channel set on every record"),
            sb::Field::string("category_hint").fallback("\"\"").describe(
                "If not empty, set as hints.category (classification.hint) on synthetic records"),
            sb::Field::boolean("fail_start").fallback("false").describe(
                "start() fails with SB_ERR_INVALID (to test failure handling)"),
            sb::Field::boolean("throw_in_create").fallback("false").describe(
                "The constructor throws (to test failure handling)"),
        };
        return i;
    }

    explicit MemorySource(sb::Host host)
        : sb::Plugin(host),
          count_(host.integer("count")),
          interval_ms_(host.duration_ms("interval")),
          channel_(host.string("channel")),
          hint_(host.string("category_hint")),
          fail_start_(host.boolean("fail_start")),
          instance_(host.instance_name()) {
        if (host.boolean("throw_in_create")) throw std::runtime_error("throw_in_create is set");
        if (auto saved = host.state("emitted")) {
            auto r = std::from_chars(saved->data(), saved->data() + saved->size(), emitted_);
            if (r.ec != std::errc() || r.ptr != saved->data() + saved->size() || emitted_ < 0)
                throw sb::Error(SB_ERR_INTERNAL, "stored cursor 'emitted' is not a count");
        }
    }

    void start() {
        if (fail_start_) throw sb::Error(SB_ERR_INVALID, "fail_start is set");
        host().route("POST", ("/hooks/memory/" + instance_).c_str(),
                     [this](const sb::HttpRequest& req, sb::HttpResponse& resp) {
                         on_hook(req, resp);
                     });
        host().info("started: " + std::to_string(emitted_) + " of " + std::to_string(count_) +
                    " synthetic records already emitted");
    }

    // SB_OK after emitting one record, SB_IDLE when none is due.
    sb::Status poll() {
        if (emitted_ >= count_) return SB_IDLE;
        std::int64_t now = host().now_ms();
        if (last_emit_ms_ >= 0 && now - last_emit_ms_ < interval_ms_) return SB_IDLE;
        std::int64_t n = emitted_ + 1;
        std::vector<sb::Record> batch;
        batch.push_back(synthetic(n, now));
        std::string cursor = std::to_string(n);
        std::vector<sb::Status> results;
        sb::Status s = host().emit_batch(batch, "emitted", cursor.c_str(), &results);
        if (s != SB_OK) {
            // Not committed: the same record is made again next time.
            host().count("emit_unavailable");
            return s;
        }
        emitted_ = n;
        last_emit_ms_ = now;
        if (results[0] == SB_OK)
            host().count("records_emitted");
        else if (results[0] == SB_DUPLICATE)
            host().count("records_duplicate");
        else {
            host().count("records_refused");
            host().warn("synthetic record " + cursor + " refused: " + sb::status_name(results[0]));
        }
        return SB_OK;
    }

    sb::Status erase(const sb::EraseRequest& req) {
        // Nothing is kept at this "vendor"; the request is acknowledged.
        host().count("erase_requests");
        host().info("erase requested for record " + std::string(req.record_id) + " (" +
                    (req.reason == SB_ERASE_REQUEST ? "subject request" : "retention") + ")");
        return SB_OK;
    }

private:
    sb::Record synthetic(std::int64_t n, std::int64_t now) const {
        std::string num = std::to_string(n);
        sb::Record r = host().record();
        r.set("citizen.name", "Test Person " + num, "identity.name");
        r.set("contact.email", "person-" + num + "@example.org", "contact.email");
        r.set("content.text", "Test message " + num, "content.free_text");
        r.set("ref.sequence", n, "reference.internal");
        if (!hint_.empty()) r.set("hints.category", hint_, "classification.hint");
        r.meta(SB_META_CHANNEL, channel_);
        r.meta(SB_META_EXTERNAL_ID, "mem-" + instance_ + "-" + num);
        r.meta(SB_META_OCCURRED_AT, sb::format_time(now));
        return r;
    }

    void on_hook(const sb::HttpRequest& req, sb::HttpResponse& resp) const {
        auto reject = [&](const std::string& why) {
            host().count("http_rejected");
            // The reason names a line number, never what the line held.
            resp.respond(400, "{\"error\":\"" + why + "\"}");
        };
        sb::Record r = host().record();
        std::string_view body = req.body();
        std::size_t line_no = 0, fields = 0;
        while (!body.empty()) {
            std::size_t end = body.find('\n');
            std::string_view line = body.substr(0, end);
            body.remove_prefix(end == std::string_view::npos ? body.size() : end + 1);
            ++line_no;
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            if (line.empty()) continue;
            std::size_t t1 = line.find('\t');
            std::size_t t2 = t1 == std::string_view::npos ? t1 : line.find('\t', t1 + 1);
            if (t2 == std::string_view::npos || line.find('\t', t2 + 1) != std::string_view::npos)
                return reject("line " + std::to_string(line_no) +
                              ": expected path<TAB>category<TAB>value");
            std::string path(line.substr(0, t1));
            std::string category(line.substr(t1 + 1, t2 - t1 - 1));
            if (!is_category(category))
                return reject("line " + std::to_string(line_no) + ": invalid category");
            sb_value v{SB_VALUE_STRING, line.data() + t2 + 1, line.size() - t2 - 1, 0, 0};
            if (host().api()->record_set(r.handle(), path.c_str(), &v,
                                         category.empty() ? nullptr : category.c_str()) != SB_OK)
                return reject("line " + std::to_string(line_no) + ": invalid field path");
            ++fields;
        }
        if (fields == 0) return reject("no fields in body");
        if (auto key = req.header("Idempotency-Key")) {
            if (!is_key(*key)) return reject("invalid Idempotency-Key");
            r.meta(SB_META_EXTERNAL_ID, *key);
        }
        r.meta(SB_META_CHANNEL, channel_);
        r.meta(SB_META_OCCURRED_AT, sb::format_time(host().now_ms()));
        sb::Status s = host().emit(std::move(r));
        host().count(s == SB_OK ? "http_records" : s == SB_DUPLICATE ? "http_duplicate"
                                                                     : "http_not_committed");
        int code = (s == SB_OK || s == SB_DUPLICATE) ? 202
                   : s == SB_ERR_UNAVAILABLE         ? 503
                   : s == SB_ERR_INVALID             ? 400
                                                     : 500;
        resp.respond(code, std::string("{\"status\":\"") + sb::status_name(s) + "\"}");
    }

    const std::int64_t count_;
    const std::int64_t interval_ms_;
    const std::string channel_;
    const std::string hint_;
    const bool fail_start_;
    const std::string instance_;
    // poll() runs on one thread per instance, so these need no lock.
    std::int64_t emitted_ = 0;
    std::int64_t last_emit_ms_ = -1;
};

} // namespace

SB_PLUGIN(MemorySource)
