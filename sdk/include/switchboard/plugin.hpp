// Switchboard plugin SDK: the C++ layer over the C ABI in plugin.h.
//
// A vendor writes an ordinary C++ class and one macro:
//
//     class MySource : public sb::Plugin {
//     public:
//         static sb::PluginInfo info();            // name, kind, schema, ...
//         explicit MySource(sb::Host host);        // read config, may throw
//         void start();                            // optional
//         void stop();                             // optional
//         sb::Status poll();                       // optional (sources)
//         sb::Status deliver(const sb::Delivery&); // destinations
//         sb::Status erase(const sb::EraseRequest&);     // optional
//         sb::Status transform(sb::MutableRecord&); // transforms
//     };
//     SB_PLUGIN(MySource)
//
// The macro exports the ABI entry point and builds the descriptor. Hooks are
// wired for the member functions the class has; the capability bits follow.
// Every hook runs inside a guard: an exception never crosses into the host,
// it becomes a status code (sb::Error carries its own, anything else is
// SB_ERR_INTERNAL) and its message is handed to host->set_error, which logs
// it with the instance name.
//
// Requires C++20.
#pragma once

#include <switchboard/detail/abi.hpp>
#include <switchboard/detail/record_data.hpp>
#include <switchboard/plugin.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace sb {

using Status = sb_status;

// The exception to throw from a plugin when the status matters.
class Error : public std::runtime_error {
public:
    Error(Status status, const std::string& message)
        : std::runtime_error(message), status_(status) {}
    explicit Error(const std::string& message) : Error(SB_ERR_INTERNAL, message) {}
    Status status() const { return status_; }

private:
    Status status_;
};

inline const char* status_name(Status s);

// Unix milliseconds (host().now_ms()) as RFC 3339 UTC, for occurred_at.
inline std::string format_time(std::int64_t ms) { return detail::format_time(ms); }

// `s` as a JSON string literal, quotes included; invalid UTF-8 becomes U+FFFD.
inline std::string json_quote(std::string_view s) {
    std::string out;
    detail::append_json_string(out, s);
    return out;
}

// ---------------------------------------------------------------------------
// Describing a plugin

// One key of the plugin's config schema, built fluently:
//   sb::Field::string("token").required().secret().describe("hook token")
class Field {
public:
    static Field string(std::string key) { return Field(std::move(key), SB_CFG_STRING); }
    static Field integer(std::string key) { return Field(std::move(key), SB_CFG_INT); }
    static Field number(std::string key) { return Field(std::move(key), SB_CFG_FLOAT); }
    static Field boolean(std::string key) { return Field(std::move(key), SB_CFG_BOOL); }
    static Field duration(std::string key) { return Field(std::move(key), SB_CFG_DURATION); }
    static Field path(std::string key) { return Field(std::move(key), SB_CFG_PATH); }
    static Field size(std::string key) { return Field(std::move(key), SB_CFG_SIZE); }

    Field& required() { flags_ |= SB_CFG_REQUIRED; return *this; }
    Field& secret() { flags_ |= SB_CFG_SECRET; return *this; }
    Field& multi() { flags_ |= SB_CFG_MULTI; return *this; }
    Field& min(double v) { flags_ |= SB_CFG_HAS_MIN; min_ = v; return *this; }
    Field& max(double v) { flags_ |= SB_CFG_HAS_MAX; max_ = v; return *this; }
    Field& range(double lo, double hi) { return min(lo).max(hi); }
    // The default as TOML literal text: "30s" for a duration is written
    // with its quotes, "\"30s\"", exactly as it would appear in the file.
    Field& fallback(std::string toml_literal) {
        default_ = std::move(toml_literal);
        has_default_ = true;
        return *this;
    }
    Field& describe(std::string text) { description_ = std::move(text); return *this; }
    Field& choices(std::initializer_list<const char*> values) {
        choices_.assign(values.begin(), values.end());
        return *this;
    }

    const std::string& key() const { return key_; }

private:
    friend struct DescriptorStorage;
    Field(std::string key, sb_config_type type) : key_(std::move(key)), type_(type) {}

    std::string key_;
    sb_config_type type_;
    std::uint32_t flags_ = 0;
    double min_ = 0, max_ = 0;
    std::string default_;
    bool has_default_ = false;
    std::string description_;
    std::vector<std::string> choices_;
};

struct PluginInfo {
    std::string name;
    std::string version;
    std::string vendor;
    std::string licence;
    std::string description;
    sb_plugin_kind kind = SB_KIND_SOURCE;
    std::uint64_t capabilities = 0; // added to those derived from the class
    std::vector<std::string> data_categories;
    std::vector<Field> config;
};

// Owns the strings and arrays that a C descriptor points into.
struct DescriptorStorage {
    PluginInfo info;
    std::vector<const char*> categories;
    std::vector<std::vector<const char*>> choices;
    std::vector<sb_config_field> fields;
    sb_plugin_descriptor descriptor{};

    explicit DescriptorStorage(PluginInfo in) : info(std::move(in)) {
        for (const auto& c : info.data_categories) categories.push_back(c.c_str());
        categories.push_back(nullptr);
        choices.reserve(info.config.size());
        for (const Field& f : info.config) {
            sb_config_field c{};
            c.struct_size = sizeof(sb_config_field);
            c.key = f.key_.c_str();
            c.type = f.type_;
            c.flags = f.flags_;
            c.default_value = f.has_default_ ? f.default_.c_str() : nullptr;
            c.min = f.min_;
            c.max = f.max_;
            c.description = f.description_.c_str();
            if (!f.choices_.empty()) {
                std::vector<const char*> list;
                for (const auto& s : f.choices_) list.push_back(s.c_str());
                list.push_back(nullptr);
                choices.push_back(std::move(list));
                c.choices = choices.back().data();
            }
            fields.push_back(c);
        }
        descriptor.struct_size = sizeof(sb_plugin_descriptor);
        descriptor.abi_major = SB_ABI_MAJOR;
        descriptor.abi_minor = SB_ABI_MINOR;
        descriptor.name = info.name.c_str();
        descriptor.version = info.version.c_str();
        descriptor.vendor = info.vendor.c_str();
        descriptor.licence = info.licence.c_str();
        descriptor.description = info.description.c_str();
        descriptor.kind = info.kind;
        descriptor.capabilities = info.capabilities;
        descriptor.data_categories = categories.data();
        descriptor.config_fields = fields.data();
        descriptor.n_config_fields = fields.size();
    }
    DescriptorStorage(const DescriptorStorage&) = delete;
    DescriptorStorage& operator=(const DescriptorStorage&) = delete;
};

// ---------------------------------------------------------------------------
// Records

// A field read from a record; views are valid while the record is unchanged.
struct FieldView {
    std::string_view path;
    std::string_view category;
    sb_value value{};

    bool is_null() const { return value.type == SB_VALUE_NULL; }
    bool is_string() const { return value.type == SB_VALUE_STRING; }
    std::string_view str() const {
        return value.type == SB_VALUE_STRING ? std::string_view(value.str, value.len)
                                             : std::string_view();
    }
    std::int64_t integer() const { return value.i; }
    double number() const { return value.type == SB_VALUE_INT ? double(value.i) : value.f; }
    bool boolean() const { return value.i != 0; }
};

// Read-only access to a record the host owns.
class RecordView {
public:
    RecordView(const sb_host_api* api, const sb_record* rec) : api_(api), rec_(rec) {}

    std::optional<std::string_view> meta(const char* key) const {
        const char* v = api_->record_get_meta(rec_, key);
        if (!v) return std::nullopt;
        return std::string_view(v);
    }
    std::size_t size() const { return api_->record_field_count(rec_); }
    FieldView at(std::size_t index) const {
        sb_field f{};
        f.struct_size = sizeof f;
        if (api_->record_field_at(rec_, index, &f) != SB_OK) return {};
        return {f.path, f.category, f.value};
    }
    std::optional<FieldView> get(const char* path) const {
        sb_field f{};
        f.struct_size = sizeof f;
        if (api_->record_get(rec_, path, &f) != SB_OK) return std::nullopt;
        return FieldView{f.path, f.category, f.value};
    }
    std::size_t attachment_count() const { return api_->record_attachment_count(rec_); }
    sb_attachment attachment(std::size_t index) const {
        sb_attachment a{};
        a.struct_size = sizeof a;
        api_->record_attachment_at(rec_, index, &a);
        return a;
    }
    std::string_view json() const {
        std::size_t len = 0;
        const char* j = api_->record_json(rec_, &len);
        return j ? std::string_view(j, len) : std::string_view();
    }
    const sb_record* handle() const { return rec_; }

protected:
    const sb_host_api* api_;
    const sb_record* rec_;
};

// Writable access to a record (used by transforms and while building).
class MutableRecord : public RecordView {
public:
    MutableRecord(const sb_host_api* api, sb_record* rec) : RecordView(api, rec) {}

    MutableRecord& meta(const char* key, std::string_view value) {
        std::string v(value);
        check(api_->record_set_meta(handle(), key, v.c_str()), key);
        return *this;
    }
    using RecordView::meta;

    MutableRecord& set(const std::string& path, std::string_view value, const char* category) {
        sb_value v{SB_VALUE_STRING, value.data(), value.size(), 0, 0};
        check(api_->record_set(handle(), path.c_str(), &v, category), path.c_str());
        return *this;
    }
    MutableRecord& set(const std::string& path, const char* value, const char* category) {
        return set(path, std::string_view(value ? value : ""), category);
    }
    // Integers (any width, signed or unsigned), floating point and bool.
    template <class T>
        requires std::is_arithmetic_v<T>
    MutableRecord& set(const std::string& path, T value, const char* category) {
        sb_value v{};
        if constexpr (std::is_same_v<T, bool>) {
            v.type = SB_VALUE_BOOL;
            v.i = value ? 1 : 0;
        } else if constexpr (std::is_floating_point_v<T>) {
            v.type = SB_VALUE_FLOAT;
            v.f = static_cast<double>(value);
        } else {
            if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t))
                if (value > static_cast<T>(INT64_MAX))
                    throw Error(SB_ERR_INVALID, "record refused " + path + ": integer too large");
            v.type = SB_VALUE_INT;
            v.i = static_cast<std::int64_t>(value);
        }
        check(api_->record_set(handle(), path.c_str(), &v, category), path.c_str());
        return *this;
    }
    MutableRecord& set_null(const std::string& path, const char* category) {
        sb_value v{SB_VALUE_NULL, nullptr, 0, 0, 0};
        check(api_->record_set(handle(), path.c_str(), &v, category), path.c_str());
        return *this;
    }
    MutableRecord& attach(const sb_attachment& a) {
        check(api_->record_add_attachment(handle(), &a), "attachment");
        return *this;
    }
    sb_record* handle() const { return const_cast<sb_record*>(rec_); }

private:
    static void check(Status s, const char* what) {
        if (s != SB_OK) throw Error(SB_ERR_INVALID, std::string("record refused ") + what);
    }
};

// A record the plugin owns until it is emitted.
class Record : public MutableRecord {
public:
    Record(const sb_host_api* api, sb_host_ctx* ctx)
        : MutableRecord(api, api->record_new(ctx)), ctx_(ctx) {
        if (!rec_) throw Error(SB_ERR_INTERNAL, "host could not allocate a record");
    }
    Record(Record&& o) noexcept : MutableRecord(o.api_, o.handle()), ctx_(o.ctx_) {
        o.rec_ = nullptr;
    }
    Record& operator=(Record&& o) noexcept {
        if (this != &o) {
            reset();
            api_ = o.api_;
            rec_ = o.rec_;
            ctx_ = o.ctx_;
            o.rec_ = nullptr;
        }
        return *this;
    }
    Record(const Record&) = delete;
    Record& operator=(const Record&) = delete;
    ~Record() { reset(); }

    // Gives up ownership (the host takes it on emit).
    sb_record* release() {
        sb_record* r = handle();
        rec_ = nullptr;
        return r;
    }

private:
    void reset() {
        if (rec_) api_->record_free(ctx_, handle());
        rec_ = nullptr;
    }
    sb_host_ctx* ctx_;
};

// What a destination is asked to deliver.
struct Delivery {
    std::uint64_t id;
    std::uint64_t sequence;
    std::string_view record_id;
    std::string_view purpose;
    std::string_view profile;
    std::uint32_t profile_version;
    std::uint32_t attempt;
    RecordView record;
};

struct EraseRequest {
    std::uint64_t id;
    std::string_view record_id;
    std::string_view external_id;
    sb_erase_reason reason;
    std::optional<RecordView> record;
};

// ---------------------------------------------------------------------------
// HTTP

class HttpRequest {
public:
    HttpRequest(const sb_host_api* api, const sb_http_request* req) : api_(api), req_(req) {}
    std::string_view method() const { return api_->http_method(req_); }
    std::string_view path() const { return api_->http_path(req_); }
    std::string_view query() const { return api_->http_query(req_); }
    std::optional<std::string_view> header(const char* name) const {
        const char* v = api_->http_header(req_, name);
        if (!v) return std::nullopt;
        return std::string_view(v);
    }
    std::string_view body() const {
        std::size_t len = 0;
        const char* b = api_->http_body(req_, &len);
        return b ? std::string_view(b, len) : std::string_view();
    }

private:
    const sb_host_api* api_;
    const sb_http_request* req_;
};

class HttpResponse {
public:
    HttpResponse(const sb_host_api* api, sb_http_response* resp) : api_(api), resp_(resp) {}
    void header(const char* name, const std::string& value) {
        api_->http_set_header(resp_, name, value.c_str());
    }
    void respond(int status, std::string_view body = {},
                 const char* content_type = "application/json") {
        api_->http_respond(resp_, status, content_type, body.data(), body.size());
        responded_ = true;
    }
    bool responded() const { return responded_; }

private:
    const sb_host_api* api_;
    sb_http_response* resp_;
    bool responded_ = false;
};

using HttpHandler = std::function<void(const HttpRequest&, HttpResponse&)>;

namespace detail {

struct Callbacks;

template <class F>
Status guard(const sb_host_api* api, sb_host_ctx* ctx, F&& body) noexcept {
    try {
        return body();
    } catch (const Error& e) {
        api->set_error(ctx, e.what());
        return e.status() == SB_OK ? SB_ERR_INTERNAL : e.status();
    } catch (const std::exception& e) {
        api->set_error(ctx, e.what());
        return SB_ERR_INTERNAL;
    } catch (...) {
        api->set_error(ctx, "unknown exception");
        return SB_ERR_INTERNAL;
    }
}

// sb_host_api.audit's rules, shared by the core and the test harness.
constexpr std::size_t kAuditEventMax = 32;
constexpr std::size_t kAuditRecordIdMax = 64;
constexpr std::size_t kAuditDetailMax = 256;

inline bool audit_event_valid(std::string_view event) {
    if (event.empty() || event.size() > kAuditEventMax) return false;
    for (char c : event)
        if (!((c >= 'a' && c <= 'z') || c == '_')) return false;
    return true;
}

inline bool audit_record_id_valid(std::string_view id) {
    if (id.empty() || id.size() > kAuditRecordIdMax) return false;
    for (char c : id)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == ':' || c == '-'))
            return false;
    return true;
}

// One line of at most kAuditDetailMax bytes: control characters (newlines,
// tabs, DEL) become spaces; a longer text is cut at a UTF-8 character
// boundary and ends with "...".
inline std::string audit_detail_sanitise(std::string_view detail) {
    std::string out;
    out.reserve(std::min(detail.size(), kAuditDetailMax));
    for (char c : detail) {
        auto u = static_cast<unsigned char>(c);
        out.push_back(u < 0x20 || u == 0x7f ? ' ' : c);
    }
    if (out.size() > kAuditDetailMax) {
        std::size_t cut = kAuditDetailMax - 3;
        while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
        out.resize(cut);
        out += "...";
    }
    return out;
}

} // namespace detail

// ---------------------------------------------------------------------------
// Host services for one instance.

class Host {
public:
    Host(const sb_host_api* api, sb_host_ctx* ctx, detail::Callbacks* callbacks)
        : api_(api), ctx_(ctx), callbacks_(callbacks) {}

    const sb_host_api* api() const { return api_; }
    sb_host_ctx* ctx() const { return ctx_; }

    // Logging: one line, no personal data.
    void log(sb_log_level level, const std::string& message) const {
        api_->log(ctx_, level, message.c_str());
    }
    bool log_enabled(sb_log_level level) const { return api_->log_enabled(ctx_, level) != 0; }
    void debug(const std::string& m) const { log(SB_LOG_DEBUG, m); }
    void info(const std::string& m) const { log(SB_LOG_INFO, m); }
    void warn(const std::string& m) const { log(SB_LOG_WARN, m); }
    void error(const std::string& m) const { log(SB_LOG_ERROR, m); }

    void count(const char* name, std::uint64_t delta = 1) const {
        api_->counter_add(ctx_, name, delta);
    }
    void gauge(const char* name, double value) const { api_->gauge_set(ctx_, name, value); }
    std::int64_t now_ms() const { return api_->now_ms(ctx_); }

    // Configuration. The typed getters throw sb::Error(SB_ERR_INVALID) when a
    // key has no value and no default (the core has already checked required
    // keys, so this means the plugin asked for a key it did not declare).
    std::optional<std::string> string_opt(const char* key) const {
        const char* v = nullptr;
        if (!api_->config_string(ctx_, key, &v) || !v) return std::nullopt;
        return std::string(v);
    }
    std::string string(const char* key) const { return need(string_opt(key), key); }
    std::optional<std::int64_t> integer_opt(const char* key) const {
        std::int64_t v = 0;
        if (!api_->config_int(ctx_, key, &v)) return std::nullopt;
        return v;
    }
    std::int64_t integer(const char* key) const { return need(integer_opt(key), key); }
    std::int64_t duration_ms(const char* key) const { return integer(key); }
    std::optional<double> number_opt(const char* key) const {
        double v = 0;
        if (!api_->config_float(ctx_, key, &v)) return std::nullopt;
        return v;
    }
    double number(const char* key) const { return need(number_opt(key), key); }
    std::optional<bool> boolean_opt(const char* key) const {
        int v = 0;
        if (!api_->config_bool(ctx_, key, &v)) return std::nullopt;
        return v != 0;
    }
    bool boolean(const char* key) const { return need(boolean_opt(key), key); }
    std::vector<std::string> list(const char* key) const {
        std::vector<std::string> out;
        std::size_t n = api_->config_list_size(ctx_, key);
        for (std::size_t i = 0; i < n; ++i) {
            const char* v = nullptr;
            if (api_->config_list_string(ctx_, key, i, &v) && v) out.emplace_back(v);
        }
        return out;
    }

    std::string instance_name() const { return api_->instance_name(ctx_); }
    std::filesystem::path data_dir() const { return api_->data_dir(ctx_); }

    // Records.
    Record record() const { return Record(api_, ctx_); }
    // Blocks until durably committed. See sb_host_api.emit.
    Status emit(Record&& r) const { return api_->emit(ctx_, r.release()); }
    // One durable commit for the batch and the cursor. See emit_batch.
    Status emit_batch(std::vector<Record>& records, const char* state_key = nullptr,
                      const char* state_value = nullptr,
                      std::vector<Status>* results = nullptr) const {
        std::vector<sb_record*> raw;
        raw.reserve(records.size());
        for (auto& r : records) raw.push_back(r.release());
        records.clear();
        if (results) results->assign(raw.size(), SB_OK);
        return api_->emit_batch(ctx_, raw.data(), raw.size(), state_key, state_value,
                                results ? results->data() : nullptr);
    }
    // ABI 1.3: emit_batch in two steps, so that the next batch can be read
    // while this one commits. See sb_host_api.emit_begin.
    bool can_emit_ahead() const {
        return SB_HAS_FIELD(api_, sb_host_api, emit_wait) && api_->emit_begin && api_->emit_wait;
    }
    // Hands the records over (`records` is emptied); SB_OK sets `ticket`,
    // which must be waited for with emit_wait, once.
    Status emit_begin(std::vector<Record>& records, const char* state_key,
                      const char* state_value, std::uint64_t& ticket) const {
        std::vector<sb_record*> raw;
        raw.reserve(records.size());
        for (auto& r : records) raw.push_back(r.release());
        records.clear();
        if (!can_emit_ahead()) { // an older host: commit now (sb_host_api.emit_batch)
            for (sb_record* r : raw) api_->record_free(ctx_, r);
            return SB_ERR_UNSUPPORTED;
        }
        return api_->emit_begin(ctx_, raw.data(), raw.size(), state_key, state_value, &ticket);
    }
    // What emit_batch would have returned; `results` (may be null) gets
    // `count` statuses, one per record begun.
    Status emit_wait(std::uint64_t ticket, std::vector<Status>* results = nullptr,
                     std::size_t count = 0) const {
        if (!can_emit_ahead()) return SB_ERR_UNSUPPORTED;
        if (results) results->assign(count, SB_OK);
        return api_->emit_wait(ctx_, ticket, results ? results->data() : nullptr);
    }
    Status quarantine(std::string_view bytes, const std::string& reason,
                      const char* ref = nullptr) const {
        return api_->quarantine(ctx_, bytes.data(), bytes.size(), reason.c_str(), ref);
    }

    // Durable per-instance state.
    std::optional<std::string> state(const char* key) const {
        char* v = nullptr;
        if (!api_->state_get(ctx_, key, &v) || !v) return std::nullopt;
        std::string out(v);
        api_->free(v);
        return out;
    }
    Status set_state(const char* key, const std::string& value) const {
        return api_->state_set(ctx_, key, value.c_str());
    }
    Status clear_state(const char* key) const { return api_->state_set(ctx_, key, nullptr); }

    void complete(std::uint64_t id, Status status, const char* receipt = nullptr) const {
        api_->complete(ctx_, id, status, receipt);
    }

    // Audit (ABI 1.1): whether this host has sb_host_api.audit (an older
    // host's table ends before it).
    bool can_audit() const { return SB_HAS_FIELD(api_, sb_host_api, audit) && api_->audit; }
    // Writes an audit entry about this instance; see sb_host_api.audit:
    // `event` is [a-z_]{1,32}, `detail` one short line that never carries
    // personal data. SB_ERR_UNSUPPORTED when the host has no audit function;
    // never throws.
    Status audit(const char* event, const std::string& detail = {},
                 const char* record_id = nullptr) const {
        if (!can_audit()) return SB_ERR_UNSUPPORTED;
        return api_->audit(ctx_, event, record_id, detail.c_str());
    }

    // HTTP: registers a handler (call from start). An exception in the
    // handler becomes a 500 answer and an error log line.
    void route(const char* method, const char* path, HttpHandler handler) const;

    // Timers: fn runs on the host's timer thread; exceptions are logged.
    std::uint64_t timer(std::int64_t delay_ms, std::int64_t interval_ms,
                        std::function<void()> fn) const;
    // Cancels a timer started with timer(); its callback is released.
    void cancel_timer(std::uint64_t id) const;

private:
    template <class T>
    static T need(std::optional<T> v, const char* key) {
        if (!v) throw Error(SB_ERR_INVALID, std::string("config key '") + key + "' has no value");
        return *v;
    }

    const sb_host_api* api_;
    sb_host_ctx* ctx_;
    detail::Callbacks* callbacks_;
};

// Optional convenience base: keeps the Host for the plugin.
class Plugin {
public:
    explicit Plugin(Host host) : host_(host) {}
    virtual ~Plugin() = default;
    const Host& host() const { return host_; }

private:
    Host host_;
};

namespace detail {

// Callbacks registered by an instance; they live as long as the instance, so
// the host can hold plain pointers to them.
struct Callbacks {
    struct Route {
        HttpHandler handler;
        Host host;
    };
    struct Timer {
        std::function<void()> fn;
        Host host;
        std::uint64_t id = 0;
    };
    std::mutex mutex;
    std::list<Route> routes;
    std::list<Timer> timers;

    static void call_route(void* user, const sb_http_request* req, sb_http_response* resp) {
        auto* route = static_cast<Route*>(user);
        HttpResponse out(route->host.api(), resp);
        try {
            route->handler(HttpRequest(route->host.api(), req), out);
        } catch (const std::exception& e) {
            route->host.error(std::string("HTTP handler failed: ") + e.what());
        } catch (...) {
            route->host.error("HTTP handler failed: unknown exception");
        }
        if (!out.responded()) out.respond(500, "{\"error\":\"internal error\"}");
    }

    // Set while a timer callback runs on this thread.
    static inline thread_local bool in_timer = false;

    static void call_timer(void* user) {
        auto* timer = static_cast<Timer*>(user);
        struct Running {
            Running() { in_timer = true; }
            ~Running() { in_timer = false; }
        } running;
        try {
            timer->fn();
        } catch (const std::exception& e) {
            timer->host.error(std::string("timer failed: ") + e.what());
        } catch (...) {
            timer->host.error("timer failed: unknown exception");
        }
    }
};

} // namespace detail

inline void Host::route(const char* method, const char* path, HttpHandler handler) const {
    detail::Callbacks::Route* stored;
    {
        std::lock_guard lock(callbacks_->mutex);
        stored = &callbacks_->routes.emplace_back(detail::Callbacks::Route{std::move(handler), *this});
    }
    Status s = api_->http_route(ctx_, method, path, &detail::Callbacks::call_route, stored);
    if (s != SB_OK) {
        std::lock_guard lock(callbacks_->mutex);
        callbacks_->routes.remove_if([&](const auto& r) { return &r == stored; });
        throw Error(s, std::string("could not register HTTP route ") + method + " " + path);
    }
}

inline std::uint64_t Host::timer(std::int64_t delay_ms, std::int64_t interval_ms,
                                 std::function<void()> fn) const {
    detail::Callbacks::Timer* stored;
    {
        std::lock_guard lock(callbacks_->mutex);
        stored = &callbacks_->timers.emplace_back(detail::Callbacks::Timer{std::move(fn), *this});
    }
    std::uint64_t id =
        api_->timer_start(ctx_, delay_ms, interval_ms, &detail::Callbacks::call_timer, stored);
    std::lock_guard lock(callbacks_->mutex);
    if (id == 0) {
        callbacks_->timers.remove_if([&](const auto& t) { return &t == stored; });
        throw Error(SB_ERR_INTERNAL, "could not start timer");
    }
    stored->id = id;
    return id;
}

inline void Host::cancel_timer(std::uint64_t id) const {
    // After timer_cancel returns, the host never calls the callback again.
    // From inside a timer callback (possibly this very timer's), the entry
    // must outlive the running call, so it is released with the instance.
    api_->timer_cancel(ctx_, id);
    if (detail::Callbacks::in_timer) return;
    std::lock_guard lock(callbacks_->mutex);
    callbacks_->timers.remove_if([&](const auto& t) { return t.id == id; });
}

// ---------------------------------------------------------------------------
// Glue from the C ABI to the class T.

namespace detail {

template <class T>
struct Instance {
    const sb_host_api* api;
    sb_host_ctx* ctx;
    Callbacks callbacks;
    std::unique_ptr<T> object;
};

template <class T>
Instance<T>* self(sb_instance* p) {
    return reinterpret_cast<Instance<T>*>(p);
}

template <class R>
Status to_status(R&& r) {
    if constexpr (std::is_same_v<std::decay_t<R>, Status>)
        return r;
    else
        return SB_OK;
}

template <class T>
struct Hooks {
    static sb_status create(const sb_host_api* api, sb_host_ctx* ctx, sb_instance** out) {
        if (!out) return SB_ERR_INVALID;
        *out = nullptr;
        auto inst = std::make_unique<Instance<T>>();
        inst->api = api;
        inst->ctx = ctx;
        Status s = guard(api, ctx, [&] {
            inst->object = std::make_unique<T>(Host(api, ctx, &inst->callbacks));
            return SB_OK;
        });
        if (s == SB_OK) *out = reinterpret_cast<sb_instance*>(inst.release());
        return s;
    }
    static void destroy(sb_instance* p) {
        auto* inst = self<T>(p);
        // Destructors must not throw; if one does, report and carry on.
        guard(inst->api, inst->ctx, [&] {
            inst->object.reset();
            return SB_OK;
        });
        delete inst;
    }
    static sb_status start(sb_instance* p) {
        auto* inst = self<T>(p);
        return guard(inst->api, inst->ctx, [&] {
            if constexpr (std::is_void_v<decltype(inst->object->start())>) {
                inst->object->start();
                return SB_OK;
            } else {
                return to_status(inst->object->start());
            }
        });
    }
    static sb_status stop(sb_instance* p) {
        auto* inst = self<T>(p);
        return guard(inst->api, inst->ctx, [&] {
            if constexpr (std::is_void_v<decltype(inst->object->stop())>) {
                inst->object->stop();
                return SB_OK;
            } else {
                return to_status(inst->object->stop());
            }
        });
    }
    static sb_status poll(sb_instance* p) {
        auto* inst = self<T>(p);
        return guard(inst->api, inst->ctx, [&] { return inst->object->poll(); });
    }
    static sb_status deliver(sb_instance* p, const sb_delivery* d) {
        auto* inst = self<T>(p);
        return guard(inst->api, inst->ctx, [&] {
            Delivery del{d->delivery_id,
                         d->sequence,
                         d->record_id ? d->record_id : "",
                         d->purpose ? d->purpose : "",
                         d->profile ? d->profile : "",
                         d->profile_version,
                         d->attempt,
                         RecordView(inst->api, d->record)};
            return inst->object->deliver(del);
        });
    }
    static sb_status flush(sb_instance* p) {
        auto* inst = self<T>(p);
        return guard(inst->api, inst->ctx, [&] { return inst->object->flush(); });
    }
    static sb_status erase(sb_instance* p, const sb_erase_request* r) {
        auto* inst = self<T>(p);
        return guard(inst->api, inst->ctx, [&] {
            EraseRequest req{r->request_id, r->record_id ? r->record_id : "",
                             r->external_id ? r->external_id : "", r->reason, std::nullopt};
            if (r->record) req.record.emplace(inst->api, r->record);
            return inst->object->erase(req);
        });
    }
    static sb_status transform(sb_instance* p, sb_record* rec) {
        auto* inst = self<T>(p);
        return guard(inst->api, inst->ctx, [&] {
            MutableRecord m(inst->api, rec);
            return inst->object->transform(m);
        });
    }
};

template <class T>
const sb_plugin_descriptor* descriptor() {
    static DescriptorStorage storage(T::info());
    static const bool wired = [] {
        auto& d = storage.descriptor;
        d.create = &Hooks<T>::create;
        d.destroy = &Hooks<T>::destroy;
        if constexpr (requires(T& t) { t.start(); }) d.start = &Hooks<T>::start;
        if constexpr (requires(T& t) { t.stop(); }) d.stop = &Hooks<T>::stop;
        if constexpr (requires(T& t) { t.poll(); }) {
            d.poll = &Hooks<T>::poll;
            d.capabilities |= SB_CAP_POLL;
        }
        if constexpr (requires(T& t, const Delivery& x) { t.deliver(x); })
            d.deliver = &Hooks<T>::deliver;
        if constexpr (requires(T& t) { t.flush(); }) d.flush = &Hooks<T>::flush;
        if constexpr (requires(T& t, const EraseRequest& x) { t.erase(x); }) {
            d.erase = &Hooks<T>::erase;
            d.capabilities |= SB_CAP_ERASE;
        }
        if constexpr (requires(T& t, MutableRecord& x) { t.transform(x); })
            d.transform = &Hooks<T>::transform;
        return true;
    }();
    (void)wired;
    return &storage.descriptor;
}

} // namespace detail

inline const char* status_name(Status s) {
    switch (s) {
    case SB_OK: return "ok";
    case SB_ERR_INVALID: return "invalid";
    case SB_ERR_TRANSIENT: return "transient";
    case SB_ERR_PERMANENT: return "permanent";
    case SB_ERR_INTERNAL: return "internal";
    case SB_ERR_UNSUPPORTED: return "unsupported";
    case SB_ERR_UNAVAILABLE: return "unavailable";
    case SB_DUPLICATE: return "duplicate";
    case SB_PENDING: return "pending";
    case SB_IDLE: return "idle";
    case SB_ERR_NOT_FOUND: return "not found";
    }
    return "unknown";
}

} // namespace sb

// Exports the ABI entry point for plugin class T. Use once per library.
#define SB_PLUGIN(T)                                                                      \
    extern "C" SB_EXPORT const sb_plugin_descriptor* switchboard_plugin_descriptor(void) { \
        return ::sb::detail::descriptor<T>();                                             \
    }
