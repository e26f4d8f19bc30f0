// hello-source: the sample source plugin of the Switchboard SDK.
//
// It shows the parts a real source has:
//   - a config schema the daemon validates before the plugin runs;
//   - a host timer that emits a record every `every` (a poller would do its
//     reading here), with its position committed together with the record;
//   - a webhook (POST /hooks/hello/<instance>) that answers 202 only once the
//     record is durably committed, so the sender retries otherwise;
//   - an erase hook, where a real plugin deletes the vendor's copy;
//   - logs with counts and ids, never the content of a record.
#include <switchboard/plugin.hpp>

#include <charconv>
#include <cstdint>
#include <string>
#include <vector>

namespace {

class HelloSource : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "hello-source";
        i.version = "1.0.0";
        i.vendor = "Example Vendor Ltd";
        i.licence = "Apache-2.0";
        i.description = "Sample source: a greeting on a timer, and a message webhook";
        i.kind = SB_KIND_SOURCE;
        // POLL and ERASE are derived from the member functions; HTTP and
        // TIMERS are declared because the plugin uses those host services.
        i.capabilities = SB_CAP_HTTP | SB_CAP_TIMERS;
        i.data_categories = {"content.free_text", "reference.internal"};
        i.config = {
            sb::Field::string("greeting").fallback("\"Hello from Switchboard\"").describe(
                "Text of the greeting record"),
            sb::Field::duration("every").min(1000).fallback("\"1m\"").describe(
                "How often a greeting is emitted"),
        };
        return i;
    }

    // Reads the config (already validated, defaults applied) and the position
    // committed by a previous run. Throwing here fails `create` with the
    // message logged against the instance.
    explicit HelloSource(sb::Host host)
        : sb::Plugin(host),
          greeting_(host.string("greeting")),
          every_ms_(host.duration_ms("every")),
          instance_(host.instance_name()) {
        if (auto saved = host.state("sent")) {
            auto r = std::from_chars(saved->data(), saved->data() + saved->size(), sent_);
            if (r.ec != std::errc() || r.ptr != saved->data() + saved->size())
                throw sb::Error(SB_ERR_INTERNAL, "stored state 'sent' is not a number");
        }
    }

    // Routes and timers are registered here; the host removes them at stop.
    void start() {
        host().timer(every_ms_, every_ms_, [this] { greet(); });
        host().route("POST", ("/hooks/hello/" + instance_).c_str(),
                     [this](const sb::HttpRequest& req, sb::HttpResponse& resp) {
                         on_message(req, resp);
                     });
        host().info("started; " + std::to_string(sent_) + " greeting(s) sent before");
    }

    // The retention clock or a subject's erasure request: delete the vendor's
    // copy. This sample keeps none. A vendor API that confirms later would
    // return SB_PENDING and call host().complete(req.id, ...) when it does.
    sb::Status erase(const sb::EraseRequest& req) {
        host().count("erase_requests");
        host().info("erase acknowledged for record " + std::string(req.record_id));
        return SB_OK;
    }

private:
    // Runs on the host's timer thread, one call at a time.
    void greet() {
        std::int64_t n = sent_ + 1;
        std::string number = std::to_string(n);
        sb::Record r = host().record();
        r.set("greeting.text", greeting_, "content.free_text");
        r.set("greeting.number", n, "reference.internal");
        r.meta(SB_META_CHANNEL, "sample");
        // The external id makes a re-emit after a crash a harmless duplicate.
        r.meta(SB_META_EXTERNAL_ID, "hello-" + instance_ + "-" + number);
        std::vector<sb::Record> batch;
        batch.push_back(std::move(r));
        // The count is committed with the record, so a restart neither skips
        // nor repeats a greeting.
        sb::Status s = host().emit_batch(batch, "sent", number.c_str());
        if (s != SB_OK) {
            host().count("greetings_not_committed");
            host().warn(std::string("greeting ") + number + " not committed: " + sb::status_name(s));
            return; // tried again on the next tick
        }
        sent_ = n;
        host().count("greetings");
    }

    // Runs on HTTP worker threads, possibly concurrently: touches no member
    // state except the immutable config.
    void on_message(const sb::HttpRequest& req, sb::HttpResponse& resp) const {
        std::string_view body = req.body();
        // Reasons describe the problem, never echo the body: it is personal data.
        if (body.empty()) return reject(resp, 400, "empty body");
        if (body.size() > kMaxMessage) return reject(resp, 413, "message longer than 4096 bytes");
        sb::Record r = host().record();
        r.set("message.text", body, "content.free_text");
        r.meta(SB_META_CHANNEL, "sample");
        sb::Status s = host().emit(std::move(r));
        if (s == SB_OK) host().count("messages");
        // 202 only when committed; 503 makes the sender retry.
        int code = s == SB_OK ? 202 : s == SB_ERR_UNAVAILABLE ? 503 : 500;
        resp.respond(code, std::string("{\"status\":\"") + sb::status_name(s) + "\"}");
    }

    void reject(sb::HttpResponse& resp, int code, const char* why) const {
        host().count("messages_rejected");
        resp.respond(code, std::string("{\"error\":\"") + why + "\"}");
    }

    static constexpr std::size_t kMaxMessage = 4096;

    const std::string greeting_;
    const std::int64_t every_ms_;
    const std::string instance_;
    std::int64_t sent_ = 0; // timer thread only (and the constructor)
};

} // namespace

SB_PLUGIN(HelloSource)
