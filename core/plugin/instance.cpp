#include "plugin/instance.hpp"

#include "http/server.hpp"
#include "log.hpp"
#include "pipeline/cards.hpp"
#include "pipeline/pii.hpp"
#include "timers.hpp"
#include "util/text.hpp"

#include <switchboard/plugin.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>

// The host's side of the opaque per-instance handle.
struct sb_host_ctx {
    switchboard::plugin::Instance* instance;
};

struct sb_http_request {
    const switchboard::http::Request* request;
};

struct sb_http_response {
    switchboard::http::Response* response;
};

namespace switchboard::plugin {

struct Instance::Ctx {
    sb_host_ctx handle;
};

namespace {

// The error a plugin explains with set_error is kept per thread, for the hook
// running on that thread.
thread_local sb_host_ctx* tl_hook_ctx = nullptr;
thread_local std::string tl_error;

Instance* self(sb_host_ctx* ctx) { return ctx ? ctx->instance : nullptr; }

const config::PluginValue* value_of(sb_host_ctx* ctx, const char* key) {
    Instance* inst = self(ctx);
    if (!inst || !key) return nullptr;
    const auto& values = inst->config().values;
    auto it = values.find(key);
    return it == values.end() ? nullptr : &it->second;
}

log::Level to_level(sb_log_level l) {
    int v = static_cast<int>(l);
    if (v < 0) v = 0;
    if (v > 4) v = 4;
    return static_cast<log::Level>(v);
}

bool valid_metric_name(const char* name) {
    if (!name || !*name) return false;
    for (const char* p = name; *p; ++p)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return false;
    return true;
}

// --- the host table ------------------------------------------------------

void h_set_error(sb_host_ctx* ctx, const char* message) {
    if (!message) return;
    if (tl_hook_ctx == ctx) {
        tl_error = message;
    } else if (Instance* inst = self(ctx)) {
        // Not inside a hook on this thread: nobody will read it later.
        inst->log(SB_LOG_ERROR, message);
    }
}

void h_log(sb_host_ctx* ctx, sb_log_level level, const char* message) {
    if (Instance* inst = self(ctx); inst && message) inst->log(level, message);
}

int h_log_enabled(sb_host_ctx* ctx, sb_log_level level) {
    Instance* inst = self(ctx);
    if (!inst) return 0;
    return log::Logger::get().enabled(to_level(level), "plugin", inst->name()) ? 1 : 0;
}

void h_counter_add(sb_host_ctx* ctx, const char* name, uint64_t delta) {
    Instance* inst = self(ctx);
    if (!inst || !valid_metric_name(name) || !inst->services().metrics) return;
    inst->services().metrics->add(inst->name(), name, delta);
}

void h_gauge_set(sb_host_ctx* ctx, const char* name, double value) {
    Instance* inst = self(ctx);
    if (!inst || !valid_metric_name(name) || !inst->services().metrics) return;
    inst->services().metrics->set(inst->name(), name, value);
}

int64_t h_now_ms(sb_host_ctx* ctx) {
    Instance* inst = self(ctx);
    if (inst && inst->services().clock) return inst->services().clock();
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

int h_config_string(sb_host_ctx* ctx, const char* key, const char** out) {
    const config::PluginValue* v = value_of(ctx, key);
    if (!v || v->multi || !out) return 0;
    *out = v->text.c_str();
    return 1;
}

int h_config_int(sb_host_ctx* ctx, const char* key, int64_t* out) {
    const config::PluginValue* v = value_of(ctx, key);
    if (!v || v->multi || !out) return 0;
    if (v->type != SB_CFG_INT && v->type != SB_CFG_DURATION && v->type != SB_CFG_SIZE) return 0;
    *out = v->integer;
    return 1;
}

int h_config_float(sb_host_ctx* ctx, const char* key, double* out) {
    const config::PluginValue* v = value_of(ctx, key);
    if (!v || v->multi || !out) return 0;
    if (v->type != SB_CFG_FLOAT && v->type != SB_CFG_INT) return 0;
    *out = v->number;
    return 1;
}

int h_config_bool(sb_host_ctx* ctx, const char* key, int* out) {
    const config::PluginValue* v = value_of(ctx, key);
    if (!v || v->multi || !out || v->type != SB_CFG_BOOL) return 0;
    *out = v->boolean ? 1 : 0;
    return 1;
}

size_t h_config_list_size(sb_host_ctx* ctx, const char* key) {
    const config::PluginValue* v = value_of(ctx, key);
    return v && v->multi ? v->items.size() : 0;
}

int h_config_list_string(sb_host_ctx* ctx, const char* key, size_t index, const char** out) {
    const config::PluginValue* v = value_of(ctx, key);
    if (!v || !v->multi || index >= v->items.size() || !out) return 0;
    *out = v->items[index].c_str();
    return 1;
}

const char* h_instance_name(sb_host_ctx* ctx) {
    Instance* inst = self(ctx);
    return inst ? inst->name().c_str() : "";
}

const char* h_data_dir(sb_host_ctx* ctx) {
    Instance* inst = self(ctx);
    return inst ? inst->own_dir().c_str() : "";
}

sb_record* h_record_new(sb_host_ctx* ctx) {
    Instance* inst = self(ctx);
    return inst ? inst->records().take().release() : new sb_record;
}

void h_record_free(sb_host_ctx*, sb_record* record) { delete record; }

// What emit_batch and emit_begin check first: takes ownership of every
// record into `owned` (freed with it whatever the answer), and returns the
// instance if it may emit them now, else null with `refused` set.
Instance* emitting(sb_host_ctx* ctx, sb_record* const* records, size_t n, bool valid,
                   std::vector<std::unique_ptr<sb_record>>& owned, sb_status& refused) {
    owned.reserve(n);
    for (size_t i = 0; i < n; ++i) owned.emplace_back(records ? records[i] : nullptr);
    Instance* inst = self(ctx);
    refused = SB_ERR_UNAVAILABLE;
    if (!inst || !inst->services().sink) return nullptr;
    if ((n > 0 && !records) || !valid) {
        refused = SB_ERR_INVALID;
        return nullptr;
    }
    if (!inst->may_emit()) {
        h_set_error(ctx, "emit outside start..stop: the instance is not running");
        return nullptr;
    }
    return inst;
}

sb_status h_emit_batch(sb_host_ctx* ctx, sb_record* const* records, size_t n,
                       const char* state_key, const char* state_value, sb_status* results) {
    std::vector<std::unique_ptr<sb_record>> owned;
    sb_status refused;
    Instance* inst = emitting(ctx, records, n, true, owned, refused);
    if (!inst) return refused;
    std::string error;
    sb_status s = inst->services().sink->emit(inst->name(), owned, state_key, state_value,
                                              results, error);
    if (s != SB_OK && s != SB_DUPLICATE && !error.empty()) h_set_error(ctx, error.c_str());
    inst->records().give_back(owned);
    return s;
}

sb_status h_emit_begin(sb_host_ctx* ctx, sb_record* const* records, size_t n,
                       const char* state_key, const char* state_value, uint64_t* ticket) {
    std::vector<std::unique_ptr<sb_record>> owned;
    sb_status refused;
    Instance* inst = emitting(ctx, records, n, ticket != nullptr, owned, refused);
    if (!inst) return refused;
    auto emission = inst->services().sink->begin(inst->name(), owned, state_key, state_value,
                                                 inst->last_emission());
    *ticket = inst->keep_emission(std::move(emission));
    return SB_OK;
}

sb_status h_emit_wait(sb_host_ctx* ctx, uint64_t ticket, sb_status* results) {
    Instance* inst = self(ctx);
    if (!inst || !inst->services().sink) return SB_ERR_UNAVAILABLE;
    std::shared_ptr<Emission> emission = inst->take_emission(ticket);
    if (!emission) {
        h_set_error(ctx, "emit_wait: unknown ticket (never begun, or already waited for)");
        return SB_ERR_INVALID;
    }
    std::vector<std::unique_ptr<sb_record>> back;
    std::string error;
    sb_status s = inst->services().sink->wait(*emission, results, back, error);
    if (s != SB_OK && s != SB_DUPLICATE && !error.empty()) h_set_error(ctx, error.c_str());
    inst->records().give_back(back);
    return s;
}

sb_status h_emit(sb_host_ctx* ctx, sb_record* record) {
    sb_status result = SB_OK;
    sb_status s = h_emit_batch(ctx, &record, 1, nullptr, nullptr, &result);
    return s == SB_OK ? result : s;
}

// A source sets a whole record's fields in one call (ABI 1.2): card numbers
// are redacted in them here, where the values are still in this core's
// cache, rather than when the journal takes the batch (which then looks
// only at leaves changed since: pipeline::redact_card_leaves).
sb_status h_record_set_shape(sb_record* record, const sb_shape* shape, const sb_value* values) {
    const sb_status s = sb::detail::record_set_shape(record, shape, values);
    if (s == SB_OK) pipeline::redact_card_leaves(record->data);
    return s;
}

sb_status h_quarantine(sb_host_ctx* ctx, const void* bytes, size_t len, const char* reason,
                       const char* ref) {
    Instance* inst = self(ctx);
    if (!inst || !inst->services().sink) return SB_ERR_UNAVAILABLE;
    if (!bytes && len) return SB_ERR_INVALID;
    std::string_view raw(static_cast<const char*>(bytes), len);
    // What could not be parsed is kept as evidence, but card data is never
    // at rest here, quarantine included.
    auto redacted = pii::redact_cards(raw);
    return inst->services().sink->quarantine(inst->name(), redacted ? *redacted : raw,
                                             reason ? reason : "unspecified", ref ? ref : "");
}

int h_state_get(sb_host_ctx* ctx, const char* key, char** out) {
    Instance* inst = self(ctx);
    if (!inst || !key || !out || !inst->services().sink) return 0;
    auto v = inst->services().sink->state_get(inst->name(), key);
    if (!v) return 0;
    *out = static_cast<char*>(std::malloc(v->size() + 1));
    if (!*out) return 0;
    std::memcpy(*out, v->c_str(), v->size() + 1);
    return 1;
}

sb_status h_state_set(sb_host_ctx* ctx, const char* key, const char* value) {
    Instance* inst = self(ctx);
    if (!inst || !key || !*key) return SB_ERR_INVALID;
    if (!inst->services().sink) return SB_ERR_UNAVAILABLE;
    return inst->services().sink->state_set(inst->name(), key, value);
}

void h_free(void* p) { std::free(p); }

void h_complete(sb_host_ctx* ctx, uint64_t id, sb_status status, const char* receipt) {
    Instance* inst = self(ctx);
    if (inst && inst->services().sink)
        inst->services().sink->complete(inst->name(), id, status, receipt);
}

sb_status h_http_route(sb_host_ctx* ctx, const char* method, const char* path,
                       sb_http_handler handler, void* user) {
    Instance* inst = self(ctx);
    if (!inst || !method || !path || !handler) return SB_ERR_INVALID;
    if (!(inst->descriptor().capabilities & SB_CAP_HTTP)) {
        h_set_error(ctx, "http_route needs the SB_CAP_HTTP capability in the descriptor");
        return SB_ERR_UNSUPPORTED;
    }
    if (!inst->starting()) {
        h_set_error(ctx, "HTTP routes can only be registered from start");
        return SB_ERR_INVALID;
    }
    std::string p = path;
    if (p.rfind("/hooks/", 0) != 0 && p.rfind("/plugins/", 0) != 0) {
        h_set_error(ctx, ("HTTP route " + p + " must start with /hooks/ or /plugins/").c_str());
        return SB_ERR_INVALID;
    }
    http::Server* server = inst->services().http;
    if (!server) {
        h_set_error(ctx, "the HTTP listener is disabled (http.enabled = false)");
        return SB_ERR_UNAVAILABLE;
    }
    bool ok = server->add_route(
        method, p,
        [handler, user](const http::Request& req, http::Response& resp) {
            sb_http_request r{&req};
            sb_http_response w{&resp};
            handler(user, &r, &w);
        },
        inst->name());
    if (!ok) {
        h_set_error(ctx, ("HTTP route " + std::string(method) + " " + p + " is already taken").c_str());
        return SB_ERR_INVALID;
    }
    return SB_OK;
}

const char* h_http_method(const sb_http_request* r) { return r ? r->request->method.c_str() : ""; }
const char* h_http_path(const sb_http_request* r) { return r ? r->request->path.c_str() : ""; }
const char* h_http_query(const sb_http_request* r) { return r ? r->request->query.c_str() : ""; }

const char* h_http_header(const sb_http_request* r, const char* name) {
    if (!r || !name) return nullptr;
    const std::string* v = r->request->header(name);
    return v ? v->c_str() : nullptr;
}

const char* h_http_body(const sb_http_request* r, size_t* len) {
    if (!r) return nullptr;
    if (len) *len = r->request->body.size();
    return r->request->body.data();
}

void h_http_respond(sb_http_response* w, int status, const char* content_type, const char* body,
                    size_t len) {
    if (!w) return;
    w->response->respond(status, content_type ? content_type : "application/octet-stream",
                         std::string(body ? body : "", body ? len : 0));
}

void h_http_set_header(sb_http_response* w, const char* name, const char* value) {
    if (!w || !name || !value) return;
    w->response->headers.emplace_back(name, value);
}

uint64_t h_timer_start(sb_host_ctx* ctx, int64_t delay_ms, int64_t interval_ms, sb_timer_fn fn,
                       void* user) {
    Instance* inst = self(ctx);
    if (!inst || !fn || !inst->services().timers) return 0;
    if (!(inst->descriptor().capabilities & SB_CAP_TIMERS)) {
        h_set_error(ctx, "timer_start needs the SB_CAP_TIMERS capability in the descriptor");
        return 0;
    }
    return inst->services().timers->add(delay_ms, interval_ms, [fn, user] { fn(user); },
                                        inst->name());
}

void h_timer_cancel(sb_host_ctx* ctx, uint64_t id) {
    Instance* inst = self(ctx);
    if (inst && inst->services().timers) inst->services().timers->cancel(id);
}

sb_status h_audit(sb_host_ctx* ctx, const char* event, const char* record_id, const char* detail) {
    Instance* inst = self(ctx);
    if (!inst) return SB_ERR_INVALID;
    if (!event || !sb::detail::audit_event_valid(event)) {
        h_set_error(ctx, "audit: the event must be [a-z_]{1,32}; entry refused");
        return SB_ERR_INVALID;
    }
    if (record_id && !sb::detail::audit_record_id_valid(record_id)) {
        h_set_error(ctx, "audit: the record id must be [A-Za-z0-9._:-]{1,64}; entry refused");
        return SB_ERR_INVALID;
    }
    if (!inst->services().audit) return SB_ERR_UNAVAILABLE;
    AuditNote note;
    note.instance = inst->name();
    note.plugin = inst->descriptor().name;
    note.event = event;
    note.record_id = record_id ? record_id : "";
    note.detail = sb::detail::audit_detail_sanitise(detail ? detail : "");
    return inst->services().audit(std::move(note));
}

sb_host_api make_api() {
    sb_host_api api{};
    api.struct_size = sizeof(sb_host_api);
    api.abi_major = SB_ABI_MAJOR;
    api.abi_minor = SB_ABI_MINOR;
    api.set_error = &h_set_error;
    api.log = &h_log;
    api.log_enabled = &h_log_enabled;
    api.counter_add = &h_counter_add;
    api.gauge_set = &h_gauge_set;
    api.now_ms = &h_now_ms;
    api.config_string = &h_config_string;
    api.config_int = &h_config_int;
    api.config_float = &h_config_float;
    api.config_bool = &h_config_bool;
    api.config_list_size = &h_config_list_size;
    api.config_list_string = &h_config_list_string;
    api.instance_name = &h_instance_name;
    api.data_dir = &h_data_dir;
    api.record_new = &h_record_new;
    api.record_free = &h_record_free;
    sb::detail::fill_record_api(api);
    api.record_set_shape = &h_record_set_shape;
    api.emit = &h_emit;
    api.emit_batch = &h_emit_batch;
    api.emit_begin = &h_emit_begin;
    api.emit_wait = &h_emit_wait;
    api.quarantine = &h_quarantine;
    api.state_get = &h_state_get;
    api.state_set = &h_state_set;
    api.free = &h_free;
    api.complete = &h_complete;
    api.http_route = &h_http_route;
    api.http_method = &h_http_method;
    api.http_path = &h_http_path;
    api.http_query = &h_http_query;
    api.http_header = &h_http_header;
    api.http_body = &h_http_body;
    api.http_respond = &h_http_respond;
    api.http_set_header = &h_http_set_header;
    api.timer_start = &h_timer_start;
    api.timer_cancel = &h_timer_cancel;
    api.audit = &h_audit;
    return api;
}

const sb_host_api kApi = make_api();

} // namespace

std::unique_ptr<sb_record> RecordPool::take() {
    {
        std::lock_guard lock(mutex_);
        if (!kept_.empty()) {
            std::unique_ptr<sb_record> record = std::move(kept_.back());
            kept_.pop_back();
            // Kept since a batch ago, out of the cache: the records the next
            // takes hand out are fetched in three steps, one take apart
            // (the record, the leaves set aside, their strings), for
            // set_shape to write into.
            const std::size_t m = kept_.size();
            if (m >= 3) kept_[m - 3]->data.prefetch_self();
            if (m >= 2) kept_[m - 2]->data.prefetch_spare_leaves();
            if (m >= 1) kept_[m - 1]->data.prefetch_spare_values();
            return record;
        }
    }
    return std::make_unique<sb_record>();
}

void RecordPool::give_back(std::vector<std::unique_ptr<sb_record>>& records) {
    std::size_t room;
    {
        std::lock_guard lock(mutex_);
        room = kKept - std::min(kKept, kept_.size());
    }
    // Emptied outside the lock; those beyond the room are freed here.
    std::size_t keep = 0;
    for (auto& record : records) {
        if (!record) continue;
        if (keep < room) {
            record->data.recycle();
            records[keep++] = std::move(record);
        } else {
            record.reset();
        }
    }
    records.resize(keep);
    std::lock_guard lock(mutex_);
    for (auto& record : records)
        if (kept_.size() < kKept) kept_.push_back(std::move(record));
    records.clear();
}

void append_audit(audit::AuditLog& log, std::int64_t ts_ms, const AuditNote& note) {
    std::string detail;
    audit::append_attr(detail, "instance", note.instance);
    audit::append_attr(detail, "plugin", note.plugin);
    audit::append_attr(detail, "event", note.event);
    if (!note.detail.empty()) audit::append_attr(detail, "detail", note.detail);
    log.append(ts_ms, "plugin", note.record_id, detail);
}

// --- Metrics ---------------------------------------------------------------

void Metrics::add(const std::string& instance, const std::string& name, std::uint64_t delta) {
    std::lock_guard lock(mutex_);
    auto& v = values_[{instance, name}];
    v.first = true;
    v.second += static_cast<double>(delta);
}

void Metrics::set(const std::string& instance, const std::string& name, double value) {
    std::lock_guard lock(mutex_);
    values_[{instance, name}] = {false, value};
}

std::vector<Metrics::Sample> Metrics::snapshot() const {
    std::lock_guard lock(mutex_);
    std::vector<Sample> out;
    for (const auto& [k, v] : values_) out.push_back({k.first, k.second, v.first, v.second});
    return out;
}

double Metrics::value(const std::string& instance, const std::string& name) const {
    std::lock_guard lock(mutex_);
    auto it = values_.find({instance, name});
    return it == values_.end() ? 0 : it->second.second;
}

// --- NoJournal -------------------------------------------------------------

namespace {
// RecordSink's default begin: committed already, the outcome kept for wait.
struct CommittedEmission : Emission {
    sb_status status = SB_ERR_UNAVAILABLE;
    std::vector<sb_status> results;
    std::vector<std::unique_ptr<sb_record>> records;
    std::string error;
};
} // namespace

std::shared_ptr<Emission> RecordSink::begin(const std::string& instance,
                                            std::vector<std::unique_ptr<sb_record>>& records,
                                            const char* state_key, const char* state_value,
                                            const std::shared_ptr<Emission>& after) {
    auto e = std::make_shared<CommittedEmission>();
    e->records = std::move(records);
    records.clear();
    e->results.assign(e->records.size(), SB_OK);
    const auto* before = dynamic_cast<const CommittedEmission*>(after.get());
    if (before && before->status != SB_OK) {
        e->error = "not committed: a batch begun before it was not";
        return e;
    }
    e->status = emit(instance, e->records, state_key, state_value, e->results.data(), e->error);
    return e;
}

sb_status RecordSink::wait(Emission& emission, sb_status* results,
                           std::vector<std::unique_ptr<sb_record>>& records, std::string& error) {
    auto& e = dynamic_cast<CommittedEmission&>(emission);
    if (results) std::copy(e.results.begin(), e.results.end(), results);
    records = std::move(e.records);
    error = e.error;
    return e.status;
}

std::shared_ptr<Emission> Instance::last_emission() {
    std::lock_guard lock(emissions_mutex_);
    auto it = emissions_.find(last_ticket_);
    return it == emissions_.end() ? nullptr : it->second;
}

std::uint64_t Instance::keep_emission(std::shared_ptr<Emission> emission) {
    std::lock_guard lock(emissions_mutex_);
    emissions_.emplace(++last_ticket_, std::move(emission));
    return last_ticket_;
}

std::shared_ptr<Emission> Instance::take_emission(std::uint64_t ticket) {
    std::lock_guard lock(emissions_mutex_);
    auto it = emissions_.find(ticket);
    if (it == emissions_.end()) return nullptr;
    std::shared_ptr<Emission> e = std::move(it->second);
    emissions_.erase(it);
    return e;
}

sb_status NoJournal::emit(const std::string&, std::vector<std::unique_ptr<sb_record>>& records,
                          const char*, const char*, sb_status* results, std::string& error) {
    if (results)
        for (std::size_t i = 0; i < records.size(); ++i) results[i] = SB_ERR_UNAVAILABLE;
    error = "this node has no journal to take records";
    return SB_ERR_UNAVAILABLE;
}
sb_status NoJournal::quarantine(const std::string&, std::string_view, const std::string&,
                                const std::string&) {
    return SB_ERR_UNAVAILABLE;
}
std::optional<std::string> NoJournal::state_get(const std::string&, const std::string&) {
    return std::nullopt;
}
sb_status NoJournal::state_set(const std::string&, const std::string&, const char*) {
    return SB_ERR_UNAVAILABLE;
}
void NoJournal::complete(const std::string&, std::uint64_t, sb_status, const char*) {}

// --- Instance --------------------------------------------------------------

Instance::Instance(std::shared_ptr<const LoadedPlugin> plugin, const config::InstanceConfig& config,
                   Services& services)
    : plugin_(std::move(plugin)), config_(config), services_(services),
      ctx_(std::make_unique<Ctx>()) {
    ctx_->handle.instance = this;
    if (!services_.data_dir.empty()) own_dir_ = services_.data_dir / "plugins" / config_.name;
}

Instance::~Instance() {
    stop();
    destroy();
}

const sb_host_api* Instance::api() const { return &kApi; }

void Instance::log(sb_log_level level, std::string_view message) const {
    log::Level l = to_level(level);
    if (config_.log_level && l < *config_.log_level) return;
    log::Logger::get().write(l, "plugin", config_.name, message);
}

template <class F>
sb_status Instance::call(F&& hook, std::string& error) {
    sb_host_ctx* saved = tl_hook_ctx;
    tl_hook_ctx = &ctx_->handle;
    tl_error.clear();
    sb_status s = hook();
    if (s != SB_OK && s != SB_IDLE && s != SB_PENDING && s != SB_DUPLICATE)
        error = tl_error.empty() ? std::string("failed with status ") + sb::status_name(s) : tl_error;
    tl_error.clear();
    tl_hook_ctx = saved;
    return s;
}

bool Instance::create(std::string& error) {
    if (state_ != State::New) return true;
    if (!own_dir_.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(own_dir_, ec);
        if (ec) {
            error = "cannot create " + own_dir_.string() + ": " + ec.message();
            return false;
        }
    }
    const sb_plugin_descriptor& d = descriptor();
    sb_status s = call([&] { return d.create(&kApi, &ctx_->handle, &instance_); }, error);
    if (s != SB_OK || !instance_) {
        if (error.empty()) error = "create returned no instance";
        instance_ = nullptr;
        return false;
    }
    state_ = State::Created;
    return true;
}

bool Instance::start(std::string& error) {
    if (state_ != State::Created) return state_ == State::Running;
    state_ = State::Starting;
    const sb_plugin_descriptor& d = descriptor();
    sb_status s = d.start ? call([&] { return d.start(instance_); }, error) : SB_OK;
    if (s != SB_OK) {
        // Undo what a half-started plugin registered.
        if (services_.http) services_.http->remove_routes(config_.name);
        if (services_.timers) services_.timers->cancel_group(config_.name);
        state_ = State::Stopped;
        return false;
    }
    state_ = State::Running;
    return true;
}

void Instance::stop() {
    State expected = State::Running;
    if (!state_.compare_exchange_strong(expected, State::Stopped)) return;
    stop_polling();
    // No HTTP handler or timer of ours runs once these return.
    if (services_.http) services_.http->remove_routes(config_.name);
    if (services_.timers) services_.timers->cancel_group(config_.name);
    const sb_plugin_descriptor& d = descriptor();
    if (d.stop) {
        std::string error;
        std::lock_guard lock(hook_mutex_);
        if (call([&] { return d.stop(instance_); }, error) != SB_OK)
            log::Logger::get().write(log::Level::Warn, "host", config_.name, "stop failed: " + error);
    }
}

void Instance::destroy() {
    if (!instance_) return;
    if (state_ == State::Running) stop();
    if (services_.http) services_.http->remove_routes(config_.name);
    if (services_.timers) services_.timers->cancel_group(config_.name);
    const sb_plugin_descriptor& d = descriptor();
    std::string error;
    call([&] {
        d.destroy(instance_);
        return SB_OK;
    }, error);
    instance_ = nullptr;
    state_ = State::Destroyed;
}

sb_status Instance::poll_once(std::string& error) {
    const sb_plugin_descriptor& d = descriptor();
    if (!d.poll || !instance_) return SB_ERR_UNSUPPORTED;
    return call([&] { return d.poll(instance_); }, error);
}

void Instance::start_polling() {
    if (!descriptor().poll || poller_.joinable() || state_ != State::Running) return;
    {
        std::lock_guard lock(poll_mutex_);
        poll_stop_ = false;
    }
    poller_ = std::thread([this] { poll_loop(); });
}

void Instance::stop_polling() {
    {
        std::lock_guard lock(poll_mutex_);
        poll_stop_ = true;
    }
    poll_cv_.notify_all();
    if (poller_.joinable()) poller_.join();
}

void Instance::poll_loop() {
    // The same failure repeated every interval would flood the log: report
    // it once, then once a minute with a count.
    std::string last_error;
    std::int64_t repeats = 0;
    auto last_report = std::chrono::steady_clock::now();
    for (;;) {
        {
            std::lock_guard lock(poll_mutex_);
            if (poll_stop_) return;
        }
        std::string error;
        sb_status s = poll_once(error);
        if (s == SB_OK) continue;
        if (s != SB_IDLE) {
            auto now = std::chrono::steady_clock::now();
            if (error != last_error) {
                log::Logger::get().write(log::Level::Error, "host", config_.name,
                                         std::string("poll failed (") + sb::status_name(s) + "): " + error);
                last_error = error;
                repeats = 0;
                last_report = now;
            } else if (++repeats, now - last_report > std::chrono::minutes(1)) {
                log::Logger::get().write(log::Level::Error, "host", config_.name,
                                         "poll failed again " + std::to_string(repeats) +
                                             " times: " + error);
                repeats = 0;
                last_report = now;
            }
        } else {
            last_error.clear();
        }
        std::unique_lock lock(poll_mutex_);
        poll_cv_.wait_for(lock, std::chrono::milliseconds(config_.poll_interval_ms),
                          [this] { return poll_stop_; });
    }
}

sb_status Instance::deliver(const sb_delivery& delivery, std::string& error) {
    const sb_plugin_descriptor& d = descriptor();
    if (!d.deliver || !instance_) return SB_ERR_UNSUPPORTED;
    std::lock_guard lock(hook_mutex_);
    return call([&] { return d.deliver(instance_, &delivery); }, error);
}

sb_status Instance::flush(std::string& error) {
    const sb_plugin_descriptor& d = descriptor();
    if (!d.flush || !instance_) return SB_OK;
    std::lock_guard lock(hook_mutex_);
    return call([&] { return d.flush(instance_); }, error);
}

sb_status Instance::erase(const sb_erase_request& request, std::string& error) {
    const sb_plugin_descriptor& d = descriptor();
    if (!d.erase || !instance_) return SB_ERR_UNSUPPORTED;
    std::lock_guard lock(hook_mutex_);
    return call([&] { return d.erase(instance_, &request); }, error);
}

sb_status Instance::transform(sb_record* record, std::string& error) {
    const sb_plugin_descriptor& d = descriptor();
    if (!d.transform || !instance_) return SB_ERR_UNSUPPORTED;
    return call([&] { return d.transform(instance_, record); }, error);
}

} // namespace switchboard::plugin
