// memory-sink: a test destination that keeps what it is given.
//
// Deliveries are held in memory and, with `output`, appended to a file as one
// JSON line each ({"seq":…,"record_id":…,"purpose":…,"profile":…,"record":…}),
// made durable in flush(). `mode` and `fail_first` choose what deliver
// answers, so tests can drive the daemon's retry and dead-letter paths.
// GET /plugins/memory-sink/<instance>/records lists what is held. erase()
// drops a record from memory and from the file.
#include <switchboard/plugin.hpp>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace {

std::string os_error() { return std::strerror(errno); }

class MemorySink : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "memory-sink";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "Test destination: keeps deliveries in memory and optionally a JSON-lines file";
        i.kind = SB_KIND_DESTINATION;
        i.capabilities = SB_CAP_HTTP | SB_CAP_JSON_RECORDS; // record_json only, but see read-fields
        i.config = {
            sb::Field::string("mode").choices({"ok", "transient", "permanent", "read-fields"}).fallback("\"ok\"")
                .describe("What deliver answers: ok, transient (retry) or permanent (dead-letter); "
                          "read-fields: ok, after reading a field, which breaks the json-records promise"),
            sb::Field::integer("fail_first").min(0).fallback("0").describe(
                "Answer SB_ERR_TRANSIENT to the first N deliver calls"),
            sb::Field::path("output").describe(
                "Also append each delivery to this file as one JSON line"),
        };
        return i;
    }

    explicit MemorySink(sb::Host host)
        : sb::Plugin(host),
          mode_(host.string("mode")),
          fail_first_(host.integer("fail_first")),
          output_(host.string_opt("output").value_or("")),
          instance_(host.instance_name()) {
        if (!output_.empty()) {
            load_held();
            open_output();
        }
    }

    ~MemorySink() override {
        if (out_) std::fclose(out_);
    }

    void start() {
        host().route("GET", ("/plugins/memory-sink/" + instance_ + "/records").c_str(),
                     [this](const sb::HttpRequest&, sb::HttpResponse& resp) { on_list(resp); });
    }

    sb::Status deliver(const sb::Delivery& d) {
        std::lock_guard lock(mutex_);
        ++calls_;
        if (calls_ <= fail_first_ || mode_ == "transient") {
            host().count("deliveries_transient");
            return SB_ERR_TRANSIENT;
        }
        if (mode_ == "permanent") {
            host().count("deliveries_permanent");
            return SB_ERR_PERMANENT;
        }
        if (mode_ == "read-fields") (void)d.record.get("contact_id"); // (tests of SB_CAP_JSON_RECORDS)
        // The record id is the idempotency key: a retry of something already
        // held (by this instance, or in the output file before a restart) is
        // acknowledged, not held twice.
        if (held_.count(std::string(d.record_id))) {
            host().count("deliveries_repeated");
            return SB_OK;
        }
        Kept k{std::string(d.record_id), d.sequence, std::string(d.purpose),
               std::string(d.profile), std::string(d.record.json())};
        if (out_) {
            std::string line = to_line(k) + "\n";
            if (std::fwrite(line.data(), 1, line.size(), out_) != line.size())
                throw sb::Error(SB_ERR_TRANSIENT, "cannot write output file: " + os_error());
        }
        held_.insert(k.record_id);
        kept_.push_back(std::move(k));
        host().count("delivered");
        host().gauge("records_held", static_cast<double>(kept_.size()));
        return SB_OK;
    }

    sb::Status flush() {
        std::lock_guard lock(mutex_);
        if (out_ && (std::fflush(out_) != 0 || ::fsync(::fileno(out_)) != 0))
            throw sb::Error(SB_ERR_TRANSIENT, "cannot sync output file: " + os_error());
        return SB_OK;
    }

    sb::Status erase(const sb::EraseRequest& req) {
        std::lock_guard lock(mutex_);
        std::string id(req.record_id);
        std::erase_if(kept_, [&](const Kept& k) { return k.record_id == id; });
        held_.erase(id);
        if (out_) rewrite_without(id);
        host().count("erased");
        host().gauge("records_held", static_cast<double>(kept_.size()));
        return SB_OK;
    }

private:
    struct Kept {
        std::string record_id;
        std::uint64_t sequence;
        std::string purpose;
        std::string profile;
        std::string record_json;
    };

    static std::string to_line(const Kept& k) {
        std::string out = "{\"seq\":" + std::to_string(k.sequence) + ",\"record_id\":";
        out += sb::json_quote(k.record_id);
        out += ",\"purpose\":";
        out += sb::json_quote(k.purpose);
        out += ",\"profile\":";
        out += sb::json_quote(k.profile);
        out += ",\"record\":" + k.record_json + "}";
        return out;
    }

    // The ids already in the output file (written before a restart).
    void load_held() {
        std::ifstream in(output_, std::ios::binary);
        const std::string key = "\"record_id\":\"";
        for (std::string line; std::getline(in, line);) {
            auto at = line.find(key);
            if (at == std::string::npos) continue;
            auto end = line.find('"', at + key.size());
            if (end != std::string::npos) held_.insert(line.substr(at + key.size(), end - at - key.size()));
        }
    }

    void open_output() {
        out_ = std::fopen(output_.c_str(), "a");
        if (!out_)
            throw sb::Error(SB_ERR_INVALID, "cannot open output file " + output_ + ": " + os_error());
    }

    // Rewrites the file without the lines of `record_id` (they may predate
    // this instance, so the file is filtered, not regenerated from memory),
    // through a temporary file and a rename so that a crash leaves one whole
    // version.
    void rewrite_without(const std::string& record_id) {
        // Every line starts {"seq":N, so the first comma precedes the record id.
        const std::string marker = "\"record_id\":" + sb::json_quote(record_id) + ",";
        std::fflush(out_);
        const std::string tmp = output_ + ".tmp";
        std::ifstream in(output_, std::ios::binary);
        std::FILE* o = std::fopen(tmp.c_str(), "w");
        if (!in || !o) {
            if (o) std::fclose(o);
            throw sb::Error(SB_ERR_TRANSIENT, "cannot rewrite output file: " + os_error());
        }
        std::string line;
        bool ok = true;
        while (std::getline(in, line)) {
            std::size_t comma = line.find(',');
            if (comma != std::string::npos && line.compare(comma + 1, marker.size(), marker) == 0)
                continue;
            line += '\n';
            ok = ok && std::fwrite(line.data(), 1, line.size(), o) == line.size();
        }
        ok = ok && std::fflush(o) == 0 && ::fsync(::fileno(o)) == 0;
        ok = std::fclose(o) == 0 && ok;
        std::error_code ec;
        if (ok) std::filesystem::rename(tmp, output_, ec);
        if (!ok || ec) {
            std::filesystem::remove(tmp, ec);
            throw sb::Error(SB_ERR_TRANSIENT, "cannot rewrite output file");
        }
        // The old handle points at the replaced file.
        std::fclose(out_);
        out_ = nullptr;
        open_output();
    }

    void on_list(sb::HttpResponse& resp) {
        std::string body = "[";
        {
            std::lock_guard lock(mutex_);
            for (std::size_t k = 0; k < kept_.size(); ++k) {
                if (k) body += ',';
                body += to_line(kept_[k]);
            }
        }
        body += "]";
        resp.respond(200, body);
    }

    std::unordered_set<std::string> held_; // record ids delivered, for idempotency
    const std::string mode_;
    const std::int64_t fail_first_;
    const std::string output_;
    const std::string instance_;
    // deliver/flush/erase run on the queue thread, the HTTP handler on worker threads.
    std::mutex mutex_;
    std::int64_t calls_ = 0;
    std::vector<Kept> kept_;
    std::FILE* out_ = nullptr;
};

} // namespace

SB_PLUGIN(MemorySink)
