// Switchboard SDK: an in-process host for testing a plugin without the daemon.
//
//     sb::testing::Harness h("build/my-source.so");   // or Harness(descriptor pointer)
//     h.config("interval", "\"5s\"").config("token", "\"env:HOOK_TOKEN\"");
//     REQUIRE(h.create() == SB_OK);
//     REQUIRE(h.start() == SB_OK);
//     CHECK(h.poll() == SB_OK);
//     CHECK(h.emitted().at(0).value("citizen.name") == "...");
//
// The harness implements the whole sb_host_api the way the daemon does:
//   - config: validated against the plugin's schema (unknown, missing and
//     mistyped keys throw std::runtime_error naming the key), defaults
//     applied, durations read as ms and sizes as bytes, secrets resolved;
//   - records: the daemon's own record code (detail/record_data.hpp);
//   - emit: an in-memory journal that stamps id/source/received_at/expires_at
//     and answers SB_DUPLICATE for a repeated (source, external_id);
//   - state: a map that survives destroy() + create() of the same Harness,
//     so that restart behaviour can be tested;
//   - HTTP: routes dispatched in-process with the daemon's matching rule;
//   - clock and timers: a fake clock starting at kEpochMs whose timers fire
//     synchronously, on the caller's thread, in advance().
// Hooks run on the caller's thread. Host functions are thread-safe, so a
// plugin may emit from threads of its own; read the result vectors once those
// threads are quiet, or inside wait_until().
//
// Header-only: the standard library and <dlfcn.h>, nothing of the daemon's.
// Set SB_HARNESS_LOG=1 in the environment to echo log lines to stderr.
#pragma once

#include <switchboard/detail/abi.hpp>
#include <switchboard/detail/record_data.hpp>
#include <switchboard/plugin.h>
#include <switchboard/plugin.hpp>

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace sb::testing {

// ---------------------------------------------------------------------------
// Small helpers

// The TOML text of a string, for Harness::config: toml_string("a\"b") is
// "\"a\\\"b\"".
inline std::string toml_string(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        case '\r': out += "\\r"; break;
        default:
            if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
                out += buf;
            } else {
                out.push_back(c);
            }
        }
    }
    return out + "\"";
}

// Unix milliseconds as RFC 3339 UTC with milliseconds: "2025-01-06T09:00:00.000Z".
inline std::string rfc3339(std::int64_t ms) { return sb::detail::format_time(ms); }

namespace impl {

// A TOML value as the core reads a config value: strings, integers, floats,
// booleans and arrays of them (no tables, no dates).
struct Toml {
    enum Kind { String, Integer, Float, Boolean, Array } kind = String;
    std::string s;
    std::int64_t i = 0;
    double f = 0;
    bool b = false;
    std::vector<Toml> items;
};

class TomlReader {
public:
    explicit TomlReader(std::string_view text) : t_(text) {}

    std::optional<Toml> read() {
        Toml v;
        skip_space();
        if (!value(v, 0)) return std::nullopt;
        skip_space();
        if (p_ != t_.size()) return std::nullopt;
        return v;
    }

private:
    void skip_space(bool newlines = false) {
        while (p_ < t_.size()) {
            char c = t_[p_];
            if (c == ' ' || c == '\t' || (newlines && (c == '\n' || c == '\r')))
                ++p_;
            else if (newlines && c == '#')
                while (p_ < t_.size() && t_[p_] != '\n') ++p_;
            else
                break;
        }
    }

    bool value(Toml& v, int depth) {
        if (p_ >= t_.size() || depth > 8) return false;
        char c = t_[p_];
        if (c == '"') return basic_string(v);
        if (c == '\'') return literal_string(v);
        if (c == '[') return array(v, depth);
        return scalar(v);
    }

    bool basic_string(Toml& v) {
        v.kind = Toml::String;
        ++p_;
        while (p_ < t_.size()) {
            char c = t_[p_++];
            if (c == '"') return true;
            if (c == '\\') {
                if (p_ >= t_.size()) return false;
                char e = t_[p_++];
                switch (e) {
                case 'b': v.s += '\b'; break;
                case 't': v.s += '\t'; break;
                case 'n': v.s += '\n'; break;
                case 'f': v.s += '\f'; break;
                case 'r': v.s += '\r'; break;
                case '"': v.s += '"'; break;
                case '\\': v.s += '\\'; break;
                case 'u':
                    if (!unicode(v.s, 4)) return false;
                    break;
                case 'U':
                    if (!unicode(v.s, 8)) return false;
                    break;
                default: return false;
                }
            } else if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
                return false;
            } else {
                v.s += c;
            }
        }
        return false;
    }

    bool unicode(std::string& out, std::size_t digits) {
        if (p_ + digits > t_.size()) return false;
        std::uint32_t cp = 0;
        auto r = std::from_chars(t_.data() + p_, t_.data() + p_ + digits, cp, 16);
        if (r.ptr != t_.data() + p_ + digits) return false;
        p_ += digits;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
        return true;
    }

    bool literal_string(Toml& v) {
        v.kind = Toml::String;
        ++p_;
        while (p_ < t_.size()) {
            char c = t_[p_++];
            if (c == '\'') return true;
            if (c == '\n' || c == '\r') return false;
            v.s += c;
        }
        return false;
    }

    bool array(Toml& v, int depth) {
        v.kind = Toml::Array;
        ++p_;
        for (;;) {
            skip_space(true);
            if (p_ < t_.size() && t_[p_] == ']') {
                ++p_;
                return true;
            }
            Toml item;
            if (!value(item, depth + 1)) return false;
            v.items.push_back(std::move(item));
            skip_space(true);
            if (p_ < t_.size() && t_[p_] == ',') {
                ++p_;
                continue;
            }
            if (p_ < t_.size() && t_[p_] == ']') {
                ++p_;
                return true;
            }
            return false;
        }
    }

    // Digits with single underscores between them, as TOML allows.
    static bool digit_run(std::string_view s, int base = 10) {
        auto digit = [base](char c) {
            if (base == 16) return std::isxdigit(static_cast<unsigned char>(c)) != 0;
            return c >= '0' && c < static_cast<char>('0' + base);
        };
        if (s.empty() || !digit(s.front()) || !digit(s.back())) return false;
        for (std::size_t k = 0; k < s.size(); ++k)
            if (!(digit(s[k]) || (s[k] == '_' && digit(s[k + 1]) && digit(s[k - 1]))))
                return false;
        return true;
    }

    static std::string strip_underscores(std::string_view s) {
        std::string out;
        for (char c : s)
            if (c != '_') out += c;
        return out;
    }

    bool scalar(Toml& v) {
        std::size_t start = p_;
        while (p_ < t_.size() && (std::isalnum(static_cast<unsigned char>(t_[p_])) ||
                                  t_[p_] == '_' || t_[p_] == '+' || t_[p_] == '-' ||
                                  t_[p_] == '.'))
            ++p_;
        std::string_view tok = t_.substr(start, p_ - start);
        if (tok == "true" || tok == "false") {
            v.kind = Toml::Boolean;
            v.b = tok == "true";
            return true;
        }
        std::string_view body = tok;
        bool negative = false;
        if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
            negative = body[0] == '-';
            body.remove_prefix(1);
        }
        if (body == "inf" || body == "nan") {
            v.kind = Toml::Float;
            v.f = body == "inf" ? HUGE_VAL : std::nan("");
            if (negative) v.f = -v.f;
            return true;
        }
        // Prefixed integers: 0x, 0o, 0b (no sign allowed).
        if (body.size() > 2 && body[0] == '0' &&
            (body[1] == 'x' || body[1] == 'o' || body[1] == 'b')) {
            if (body.size() != tok.size()) return false;
            int base = body[1] == 'x' ? 16 : body[1] == 'o' ? 8 : 2;
            if (!digit_run(body.substr(2), base)) return false;
            std::string digits = strip_underscores(body.substr(2));
            v.kind = Toml::Integer;
            auto r = std::from_chars(digits.data(), digits.data() + digits.size(), v.i, base);
            return r.ec == std::errc() && r.ptr == digits.data() + digits.size();
        }
        // Decimal: int-part [. digits] [e [sign] digits]
        std::size_t dot = body.find('.');
        std::size_t exp = body.find_first_of("eE");
        std::string_view int_part = body.substr(0, std::min(dot, exp));
        if (!digit_run(int_part)) return false;
        if (int_part.size() > 1 && int_part[0] == '0') return false; // no leading zeros
        if (dot != std::string_view::npos) {
            if (exp != std::string_view::npos && exp < dot) return false;
            std::string_view frac = body.substr(dot + 1, exp == std::string_view::npos
                                                             ? std::string_view::npos
                                                             : exp - dot - 1);
            if (!digit_run(frac)) return false;
        }
        if (exp != std::string_view::npos) {
            std::string_view e = body.substr(exp + 1);
            if (!e.empty() && (e[0] == '+' || e[0] == '-')) e.remove_prefix(1);
            if (!digit_run(e)) return false;
        }
        std::string text = (negative ? "-" : "") + strip_underscores(body);
        const char* first = text.data();
        const char* last = text.data() + text.size();
        if (dot == std::string_view::npos && exp == std::string_view::npos) {
            v.kind = Toml::Integer;
            auto r = std::from_chars(first, last, v.i);
            return r.ec == std::errc() && r.ptr == last;
        }
        v.kind = Toml::Float;
        auto r = std::from_chars(first, last, v.f);
        return r.ec == std::errc() && r.ptr == last;
    }

    std::string_view t_;
    std::size_t p_ = 0;
};

inline std::optional<Toml> parse_toml(std::string_view text) { return TomlReader(text).read(); }

using sb::detail::parse_duration;
using sb::detail::parse_size;

inline bool is_metric_name(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
    return true;
}

inline std::string number_text(double v) {
    std::string out;
    if (std::fabs(v) < 9e15 && v == std::trunc(v))
        sb::detail::append_json_int(out, static_cast<std::int64_t>(v));
    else
        sb::detail::append_json_double(out, v);
    return out;
}

} // namespace impl

// ---------------------------------------------------------------------------
// Records

// One leaf of a record, copied out of it.
struct FieldData {
    std::string path;
    std::string category;
    sb_value_type type = SB_VALUE_NULL;
    std::string str;    // STRING
    std::int64_t i = 0; // INT; BOOL as 0 or 1
    double f = 0;       // FLOAT

    // A string as it is; anything else in its JSON spelling ("12", "1.5", "true", "null").
    std::string text() const {
        std::string out;
        switch (type) {
        case SB_VALUE_STRING: return str;
        case SB_VALUE_INT: sb::detail::append_json_int(out, i); return out;
        case SB_VALUE_FLOAT: sb::detail::append_json_double(out, f); return out;
        case SB_VALUE_BOOL: return i ? "true" : "false";
        default: return "null";
        }
    }
};

using Attachment = sb::detail::AttachmentData;

// A record held by the test: one the plugin emitted, or one the test builds
// for deliver() and transform().
class TestRecord {
public:
    TestRecord() = default;
    explicit TestRecord(sb_record&& r) : rec_(std::move(r)) {}

    // Building. A refusal (bad path, conflict) throws std::invalid_argument,
    // where a plugin would get SB_ERR_INVALID.
    TestRecord& set(const std::string& path, std::string_view value,
                    const char* category = nullptr) {
        sb_value v{SB_VALUE_STRING, value.data(), value.size(), 0, 0};
        return put(path, v, category);
    }
    TestRecord& set(const std::string& path, const char* value, const char* category = nullptr) {
        return set(path, std::string_view(value), category);
    }
    template <class T>
        requires std::is_arithmetic_v<T>
    TestRecord& set(const std::string& path, T value, const char* category = nullptr) {
        sb_value v{};
        if constexpr (std::is_same_v<T, bool>) {
            v.type = SB_VALUE_BOOL;
            v.i = value ? 1 : 0;
        } else if constexpr (std::is_integral_v<T>) {
            v.type = SB_VALUE_INT;
            v.i = static_cast<std::int64_t>(value);
        } else {
            v.type = SB_VALUE_FLOAT;
            v.f = static_cast<double>(value);
        }
        return put(path, v, category);
    }
    TestRecord& set_null(const std::string& path, const char* category = nullptr) {
        sb_value v{};
        return put(path, v, category);
    }
    // Any envelope key, including those only the host sets ("id", "source",
    // "category", "received_at", "expires_at").
    TestRecord& meta(std::string_view key, std::string_view value) {
        if (rec_.data.set_meta(key, value) != SB_OK)
            throw std::invalid_argument("record refused meta key '" + std::string(key) + "'");
        return *this;
    }
    TestRecord& attach(const sb_attachment& a) {
        if (rec_.data.add_attachment(a) != SB_OK)
            throw std::invalid_argument("record refused an attachment without uri");
        return *this;
    }
    std::size_t erase(std::string_view path) { return rec_.data.erase(path); }

    // Reading.
    std::optional<std::string> meta(std::string_view key) const {
        const char* v = rec_.data.meta(key);
        if (!v) return std::nullopt;
        return std::string(v);
    }
    std::string id() const { return meta("id").value_or(""); }
    std::size_t size() const { return rec_.data.leaves().size(); }
    std::vector<FieldData> fields() const {
        std::vector<FieldData> out;
        for (const auto& l : rec_.data.leaves()) out.push_back(copy(l));
        return out;
    }
    std::optional<FieldData> field(std::string_view path) const {
        const sb::detail::Leaf* l = rec_.data.find(path);
        if (!l) return std::nullopt;
        return copy(*l);
    }
    bool has(std::string_view path) const { return rec_.data.find(path) != nullptr; }
    // The field's value as text (see FieldData::text); throws std::out_of_range
    // naming the path if there is no such field.
    std::string value(std::string_view path) const { return need(path).text(); }
    std::string category(std::string_view path) const { return need(path).category; }
    const std::vector<Attachment>& attachments() const { return rec_.data.attachments(); }
    // {"id":…, "meta":{…}, "fields":{…}, "attachments":[…]}, as record_json gives it.
    const std::string& json() const { return rec_.data.json(); }

    sb_record* handle() { return &rec_; }
    const sb_record* handle() const { return &rec_; }

private:
    TestRecord& put(const std::string& path, const sb_value& v, const char* category) {
        if (rec_.data.set(path, v, category) != SB_OK)
            throw std::invalid_argument("record refused field path '" + path + "'");
        return *this;
    }
    FieldData need(std::string_view path) const {
        auto f = field(path);
        if (!f) throw std::out_of_range("record has no field '" + std::string(path) + "'");
        return *f;
    }
    static FieldData copy(const sb::detail::Leaf& l) {
        return FieldData{l.path(), l.category(), l.type, l.str, l.value_i(), l.value_f()};
    }

    sb_record rec_;
};

// ---------------------------------------------------------------------------
// What the plugin did

struct Quarantined {
    std::string bytes;
    std::string reason;
    std::string ref;
};

struct LogLine {
    sb_log_level level;
    std::string message; // the harness's own lines start with "harness: "
};

struct Completion {
    std::uint64_t id;
    sb_status status;
    std::string receipt;
};

// An entry the plugin wrote with host->audit, as the core would store it
// (detail already sanitised; record_id empty when none was given).
struct AuditEntry {
    std::string event;
    std::string record_id;
    std::string detail;
};

struct DeliveryLog {
    std::uint64_t delivery_id;
    std::uint64_t sequence;
    std::string record_id;
    std::string purpose;
    std::string profile;
    std::uint32_t attempt;
    sb_status status;
};

struct DeliveryOptions {
    std::string purpose = "testing";
    std::string profile = "test";
    std::uint32_t profile_version = 1;
};

struct HttpReply {
    int status = 0;
    std::string content_type;
    std::string body;
    std::map<std::string, std::string> headers;
};

// ---------------------------------------------------------------------------
// The harness

class Harness {
public:
    // The fake clock starts at 2025-01-06T09:00:00Z.
    static constexpr std::int64_t kEpochMs = 1'736'154'000'000;
    // expires_at stamped on emitted records: the default retention.
    static constexpr std::int64_t kRetentionMs = 28LL * 86'400'000;

    // Opens a plugin library (RTLD_NOW | RTLD_LOCAL) and reads its descriptor.
    explicit Harness(const std::filesystem::path& plugin_path) : origin_(plugin_path.string()) {
        void* lib = ::dlopen(origin_.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            const char* why = ::dlerror();
            throw std::runtime_error("plugin " + origin_ + ": cannot load: " +
                                     (why ? why : "unknown dlopen error"));
        }
        // Never dlclose: like the daemon, keep code loaded for the life of the
        // process, so that a thread the plugin left behind cannot run unmapped code.
        void* sym = ::dlsym(lib, SB_ENTRY_POINT);
        if (!sym)
            throw std::runtime_error("plugin " + origin_ + ": no exported symbol " SB_ENTRY_POINT
                                     " (is SB_PLUGIN(...) used, and the symbol visible?)");
        sb_entry_fn entry;
        static_assert(sizeof entry == sizeof sym);
        std::memcpy(&entry, &sym, sizeof entry);
        load(entry());
    }

    // Uses a plugin compiled into the test: Harness(sb::detail::descriptor<MyPlugin>()).
    explicit Harness(const sb_plugin_descriptor* descriptor) : origin_("(in-process)") {
        load(descriptor);
    }

    Harness(const Harness&) = delete;
    Harness& operator=(const Harness&) = delete;

    ~Harness() {
        try {
            destroy();
        } catch (...) {
            // A destructor must not throw; the test has already failed if this happens.
        }
        if (own_data_dir_) {
            std::error_code ec;
            std::filesystem::remove_all(data_dir_, ec);
        }
    }

    const sb_plugin_descriptor& descriptor() const { return d_; }
    // The config schema, read with each element's own struct_size.
    const std::vector<sb_config_field>& schema() const { return schema_; }
    const sb_host_api& api() const { return api_; }

    // --- set-up: applies at the next create() ------------------------------

    // `value` is TOML literal text, as it would appear in the config file:
    // "\"abc\"", "5", "\"30s\"", "[\"a\", \"b\"]", "true".
    Harness& config(std::string key, std::string value) {
        config_text_[std::move(key)] = std::move(value);
        return *this;
    }
    Harness& unset(const std::string& key) {
        config_text_.erase(key);
        return *this;
    }
    Harness& instance_name(std::string name) {
        instance_ = std::move(name);
        return *this;
    }
    // The instance's data directory; default: a fresh temporary directory,
    // removed by the destructor. Created if missing.
    Harness& data_dir(std::filesystem::path dir) {
        if (own_data_dir_) {
            std::error_code ec;
            std::filesystem::remove_all(data_dir_, ec);
        }
        data_dir_ = std::move(dir);
        own_data_dir_ = false;
        return *this;
    }
    const std::filesystem::path& data_dir() {
        ensure_data_dir();
        return data_dir_;
    }
    // Log lines below `level` are neither kept nor enabled (default: all).
    Harness& log_level(sb_log_level level) {
        log_level_ = level;
        return *this;
    }
    // false: emit and emit_batch answer SB_ERR_UNAVAILABLE and commit nothing,
    // as when the daemon's journal is down.
    Harness& journal_available(bool available) {
        journal_available_ = available;
        commits_left_ = -1;
        return *this;
    }
    // The next `commits` emit / emit_batch calls commit; the ones after answer
    // SB_ERR_UNAVAILABLE, as when the journal fails in the middle of a run
    // (journal_available(true) ends it).
    Harness& journal_fails_after(int commits) {
        journal_available_ = true;
        commits_left_ = commits < 0 ? 0 : commits;
        return *this;
    }

    // --- lifecycle ------------------------------------------------------------

    // Validates the config (std::runtime_error naming the key on a problem),
    // then calls the plugin's create.
    sb_status create() {
        if (instance_ptr_)
            throw std::logic_error("Harness::create: already created; destroy() first");
        values_ = validate_config();
        ensure_data_dir();
        active_name_ = instance_;
        data_dir_text_ = data_dir_.string();
        phase_ = Phase::Created;
        sb_instance* out = nullptr;
        sb_status s = run("create", [&] { return d_.create(&api_, ctx(), &out); });
        if (s == SB_OK && !out) {
            note(SB_LOG_ERROR, "create returned SB_OK without an instance");
            s = SB_ERR_INTERNAL;
        }
        if (s != SB_OK) {
            if (out) note(SB_LOG_ERROR, "create failed but returned an instance (leaked)");
            drop_callbacks();
            values_.clear();
            phase_ = Phase::None;
            return s;
        }
        instance_ptr_ = out;
        return SB_OK;
    }

    sb_status start() {
        need_created("start");
        if (phase_ == Phase::Started) throw std::logic_error("Harness::start: already started");
        phase_ = Phase::Starting;
        sb_status s = d_.start ? run("start", [&] { return d_.start(instance_ptr_); }) : SB_OK;
        if (s != SB_OK) {
            // The daemon does not keep what a failed start registered.
            drop_callbacks();
            phase_ = Phase::Created;
            return s;
        }
        phase_ = Phase::Started;
        return SB_OK;
    }

    sb_status stop() {
        if (phase_ != Phase::Started) throw std::logic_error("Harness::stop: not started");
        phase_ = Phase::Stopping;
        sb_status s = d_.stop ? run("stop", [&] { return d_.stop(instance_ptr_); }) : SB_OK;
        drop_callbacks();
        phase_ = Phase::Created;
        return s;
    }

    // Stops (if started) and destroys the instance. State, emitted records and
    // the dedupe index survive, so create() again tests a restart.
    void destroy() {
        if (!instance_ptr_) return;
        if (phase_ == Phase::Started) stop();
        run("destroy", [&] {
            d_.destroy(instance_ptr_);
            return last_error_set() ? SB_ERR_INTERNAL : SB_OK;
        });
        instance_ptr_ = nullptr;
        drop_callbacks();
        values_.clear();
        phase_ = Phase::None;
    }

    bool created() const { return instance_ptr_ != nullptr; }
    bool started() const { return phase_ == Phase::Started; }

    // --- hooks ------------------------------------------------------------

    sb_status poll() {
        need_started("poll");
        if (!d_.poll) return SB_ERR_UNSUPPORTED;
        return run("poll", [&] { return d_.poll(instance_ptr_); });
    }

    // An empty record to fill for deliver() or transform().
    static TestRecord record() { return TestRecord(); }

    // Delivers a copy of `record`. Its meta "id" is the record id (one is
    // assigned if absent). A new record id gets the next sequence number; the
    // same record id again is a retry: same sequence, attempt + 1.
    sb_status deliver(const TestRecord& record, const DeliveryOptions& options = {}) {
        need_started("deliver");
        if (!d_.deliver) return SB_ERR_UNSUPPORTED;
        TestRecord copy = record;
        std::string id = copy.id();
        if (id.empty()) {
            id = next_record_id();
            copy.meta("id", id);
        }
        auto [it, fresh] = outbox_.try_emplace(id, Outbox{next_sequence_, 0});
        if (fresh) ++next_sequence_;
        ++it->second.attempts;
        sb_delivery d{};
        d.struct_size = sizeof d;
        d.delivery_id = next_request_++;
        d.sequence = it->second.sequence;
        d.record_id = id.c_str();
        d.purpose = options.purpose.c_str();
        d.profile = options.profile.c_str();
        d.profile_version = options.profile_version;
        d.attempt = it->second.attempts;
        d.record = copy.handle();
        // A plugin that reads records as JSON only is handed them rendered,
        // as the daemon does: reading their fields is then a failure here.
        const bool json_only = (d_.capabilities & SB_CAP_JSON_RECORDS) && copy.handle()->data.attachments().empty();
        sb_record rendered;
        if (json_only) {
            sb::detail::render_record(*copy.handle(), rendered);
            sb::detail::set_rendered_id(rendered, id);
            d.record = &rendered;
        }
        sb_status s = run("deliver", [&] { return d_.deliver(instance_ptr_, &d); });
        if (json_only && rendered.fields_read)
            throw std::logic_error("deliver: the plugin declares SB_CAP_JSON_RECORDS but read the record's fields "
                                   "(record_field_count, record_field_at or record_get): read record_json only, "
                                   "or do not declare json-records");
        std::lock_guard lock(mu_);
        deliveries_.push_back({d.delivery_id, d.sequence, id, options.purpose, options.profile,
                               d.attempt, s});
        return s;
    }

    sb_status flush() {
        need_started("flush");
        if (!d_.flush) return SB_OK;
        return run("flush", [&] { return d_.flush(instance_ptr_); });
    }

    // Asks the plugin to erase `record_id`. A source also gets the emitted
    // record with that id (envelope and fields), if it emitted one.
    sb_status erase(const std::string& record_id, const std::string& external_id = {},
                    sb_erase_reason reason = SB_ERASE_RETENTION) {
        need_started("erase");
        if (!d_.erase) return SB_ERR_UNSUPPORTED;
        std::optional<TestRecord> rec;
        {
            std::lock_guard lock(mu_);
            for (const auto& e : emitted_)
                if (e.id() == record_id) rec = e;
        }
        sb_erase_request r{};
        r.struct_size = sizeof r;
        r.request_id = next_request_++;
        r.record_id = record_id.c_str();
        r.external_id = external_id.empty() ? nullptr : external_id.c_str();
        r.reason = reason;
        r.record = rec ? rec->handle() : nullptr;
        return run("erase", [&] { return d_.erase(instance_ptr_, &r); });
    }
    sb_status erase(const TestRecord& emitted, sb_erase_reason reason = SB_ERASE_RETENTION) {
        return erase(emitted.id(), emitted.meta(SB_META_EXTERNAL_ID).value_or(""), reason);
    }

    sb_status transform(TestRecord& record) {
        need_started("transform");
        if (!d_.transform) return SB_ERR_UNSUPPORTED;
        return run("transform", [&] { return d_.transform(instance_ptr_, record.handle()); });
    }

    // Sends a request to the route the plugin registered: the longest route
    // whose path equals the request path or is a prefix of it followed by "/",
    // for the method or "*". 404 if none. `target` may carry "?query".
    HttpReply http(const std::string& method, const std::string& target, std::string body = {},
                   std::vector<std::pair<std::string, std::string>> headers = {}) {
        Request req;
        req.method = method;
        std::size_t q = target.find('?');
        req.path = target.substr(0, q);
        req.query = q == std::string::npos ? "" : target.substr(q + 1);
        req.body = std::move(body);
        req.headers = std::move(headers);
        std::optional<Route> route;
        {
            std::lock_guard lock(mu_);
            for (const Route& r : routes_) {
                bool method_ok = r.method == "*" || r.method == method;
                bool below = req.path.size() > r.path.size() &&
                             req.path.compare(0, r.path.size(), r.path) == 0 &&
                             req.path[r.path.size()] == '/';
                bool path_ok = req.path == r.path || below;
                if (method_ok && path_ok && (!route || r.path.size() > route->path.size()))
                    route = r;
            }
        }
        Response resp;
        if (!route) {
            resp.reply = {404, "application/json", "{\"error\":\"no route\"}", {}};
            return resp.reply;
        }
        route->handler(route->user, reinterpret_cast<const sb_http_request*>(&req),
                       reinterpret_cast<sb_http_response*>(&resp));
        if (!resp.responded) {
            note(SB_LOG_ERROR, "HTTP handler for " + route->path + " did not respond");
            resp.reply.status = 500;
            resp.reply.content_type = "application/json";
            resp.reply.body = "{\"error\":\"internal error\"}";
        }
        return resp.reply;
    }

    // Moves the fake clock forward by `ms`, firing every timer that falls due
    // on the way, in time order, each with the clock set to its due time.
    void advance(std::int64_t ms) {
        if (ms < 0) throw std::invalid_argument("Harness::advance: negative time");
        const std::int64_t target = now_.load() + ms;
        for (;;) {
            sb_timer_fn fn = nullptr;
            void* user = nullptr;
            {
                std::lock_guard lock(mu_);
                auto next = timers_.end();
                for (auto it = timers_.begin(); it != timers_.end(); ++it)
                    if (it->second.due <= target &&
                        (next == timers_.end() || it->second.due < next->second.due))
                        next = it;
                if (next == timers_.end()) break;
                now_ = std::max(now_.load(), next->second.due);
                fn = next->second.fn;
                user = next->second.user;
                // Rescheduled (or removed) before it runs, so that a cancel from
                // inside the callback sticks.
                if (next->second.interval > 0)
                    next->second.due += next->second.interval;
                else
                    timers_.erase(next);
            }
            fn(user);
        }
        now_ = target;
    }
    std::int64_t now_ms() const { return now_.load(); }
    std::size_t active_timers() const {
        std::lock_guard lock(mu_);
        return timers_.size();
    }
    // "METHOD /path" for each registered route.
    std::vector<std::string> routes() const {
        std::lock_guard lock(mu_);
        std::vector<std::string> out;
        for (const Route& r : routes_) out.push_back(r.method + " " + r.path);
        return out;
    }

    // --- what the plugin did --------------------------------------------------

    std::vector<TestRecord>& emitted() { return emitted_; }
    std::vector<Quarantined>& quarantined() { return quarantined_; }
    std::vector<LogLine>& logs() { return logs_; }
    std::map<std::string, std::uint64_t>& counters() { return counters_; }
    std::map<std::string, double>& gauges() { return gauges_; }
    std::vector<Completion>& completions() { return completions_; }
    // Entries written with host->audit (ABI 1.1), in order. Calls the host
    // would refuse (malformed event or record id) are not here; they are
    // logged as warnings.
    std::vector<AuditEntry>& audits() { return audits_; }
    // The entries with this event.
    std::vector<AuditEntry> audits(std::string_view event) const {
        std::lock_guard lock(mu_);
        std::vector<AuditEntry> out;
        for (const auto& a : audits_)
            if (a.event == event) out.push_back(a);
        return out;
    }
    // Makes host->audit answer SB_ERR_UNAVAILABLE (a node without a journal).
    Harness& audit_available(bool yes) {
        audit_available_ = yes;
        return *this;
    }
    std::vector<DeliveryLog>& deliveries() { return deliveries_; }
    // Durable state (state_set and emit_batch cursors). Kept across
    // destroy() + create(); a test may seed it before create().
    std::map<std::string, std::string>& state() { return state_; }
    // The message the last hook passed to set_error ("" if none).
    std::string last_error() const {
        std::lock_guard lock(mu_);
        return last_error_;
    }
    std::uint64_t counter(const std::string& name) const {
        std::lock_guard lock(mu_);
        auto it = counters_.find(name);
        return it == counters_.end() ? 0 : it->second;
    }
    // Whether `needle` appears in any log line or error message: use it to
    // prove that personal data never reaches the logs.
    bool logged(std::string_view needle) const {
        std::lock_guard lock(mu_);
        for (const auto& l : logs_)
            if (l.message.find(needle) != std::string::npos) return true;
        return last_error_.find(needle) != std::string::npos;
    }
    // For plugins that emit from threads of their own: waits until `pred`
    // (evaluated with the harness locked) holds, or the timeout passes.
    bool wait_until(const std::function<bool()>& pred,
                    std::chrono::milliseconds timeout = std::chrono::seconds(5)) const {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            {
                std::lock_guard lock(mu_);
                if (pred()) return true;
            }
            if (std::chrono::steady_clock::now() >= deadline) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    }

private:
    enum class Phase { None, Created, Starting, Started, Stopping };

    struct ConfigValue {
        sb_config_field field{};
        std::string text;               // STRING, PATH (secrets resolved)
        std::int64_t i = 0;             // INT, DURATION (ms), SIZE (bytes), BOOL
        double f = 0;                   // FLOAT, INT
        std::vector<std::string> items; // MULTI
    };
    struct Route {
        std::string method, path;
        sb_http_handler handler;
        void* user;
    };
    struct Timer {
        std::int64_t due, interval;
        sb_timer_fn fn;
        void* user;
    };
    struct Request {
        std::string method, path, query, body;
        std::vector<std::pair<std::string, std::string>> headers;
    };
    struct Response {
        HttpReply reply;
        bool responded = false;
    };
    struct Outbox {
        std::uint64_t sequence;
        std::uint32_t attempts;
    };

    // --- loading --------------------------------------------------------------

    void load(const sb_plugin_descriptor* d) {
        auto fail = [&](const std::string& why) {
            return std::runtime_error("plugin " + origin_ + ": refused: " + why);
        };
        // The daemon's own checks and copy (detail/abi.hpp).
        std::string problem = sb::detail::read_descriptor(d, read_);
        if (!problem.empty()) throw fail(problem);
        d_ = read_.descriptor;
        schema_ = read_.fields;
        // A default that does not pass its own schema is a plugin bug: report
        // it now, as the daemon does when it loads the library.
        for (const auto& f : schema_) {
            if (!f.default_value) continue;
            try {
                convert(f, f.default_value, true);
            } catch (const std::runtime_error& e) {
                throw fail(e.what());
            }
        }
        fill_api();
        const char* echo = std::getenv("SB_HARNESS_LOG");
        echo_ = echo && *echo && std::string_view(echo) != "0";
    }

    void fill_api() {
        api_.struct_size = sizeof(sb_host_api);
        api_.abi_major = SB_ABI_MAJOR;
        api_.abi_minor = SB_ABI_MINOR;
        api_.set_error = &h_set_error;
        api_.log = &h_log;
        api_.log_enabled = &h_log_enabled;
        api_.counter_add = &h_counter_add;
        api_.gauge_set = &h_gauge_set;
        api_.now_ms = &h_now_ms;
        api_.config_string = &h_config_string;
        api_.config_int = &h_config_int;
        api_.config_float = &h_config_float;
        api_.config_bool = &h_config_bool;
        api_.config_list_size = &h_config_list_size;
        api_.config_list_string = &h_config_list_string;
        api_.instance_name = &h_instance_name;
        api_.data_dir = &h_data_dir;
        api_.record_new = &h_record_new;
        api_.record_free = &h_record_free;
        sb::detail::fill_record_api(api_);
        api_.emit = &h_emit;
        api_.emit_batch = &h_emit_batch;
        api_.emit_begin = &h_emit_begin;
        api_.emit_wait = &h_emit_wait;
        api_.quarantine = &h_quarantine;
        api_.state_get = &h_state_get;
        api_.state_set = &h_state_set;
        api_.free = &h_free;
        api_.complete = &h_complete;
        api_.http_route = &h_http_route;
        api_.http_method = &h_http_method;
        api_.http_path = &h_http_path;
        api_.http_query = &h_http_query;
        api_.http_header = &h_http_header;
        api_.http_body = &h_http_body;
        api_.http_respond = &h_http_respond;
        api_.http_set_header = &h_http_set_header;
        api_.timer_start = &h_timer_start;
        api_.timer_cancel = &h_timer_cancel;
        api_.audit = &h_audit;
    }

    // --- config ------------------------------------------------------------

    std::string where() const {
        return "plugin " + std::string(d_.name) + ", instance " + instance_;
    }

    std::map<std::string, ConfigValue> validate_config() const {
        std::string valid;
        for (const auto& f : schema_) valid += (valid.empty() ? "" : ", ") + std::string(f.key);
        for (const auto& entry : config_text_) {
            const std::string& key = entry.first;
            bool known = std::any_of(schema_.begin(), schema_.end(),
                                     [&](const sb_config_field& f) { return key == f.key; });
            if (!known)
                throw std::runtime_error("unknown config key '" + key + "' (" + where() +
                                         "); valid keys: " +
                                         (valid.empty() ? "none" : valid));
        }
        std::map<std::string, ConfigValue> out;
        for (const auto& f : schema_) {
            auto it = config_text_.find(f.key);
            if (it != config_text_.end())
                out[f.key] = convert(f, it->second, false);
            else if (f.default_value)
                out[f.key] = convert(f, f.default_value, true);
            else if (f.flags & SB_CFG_REQUIRED)
                throw std::runtime_error("config key '" + std::string(f.key) + "' (" + where() +
                                         ") is required");
        }
        return out;
    }

    static const char* type_name(sb_config_type t) {
        switch (t) {
        case SB_CFG_STRING: return "a string";
        case SB_CFG_INT: return "an integer";
        case SB_CFG_FLOAT: return "a number";
        case SB_CFG_BOOL: return "a boolean";
        case SB_CFG_DURATION:
            return "a duration string such as \"500ms\", \"30s\", \"5m\", \"12h\" or \"28d\"";
        case SB_CFG_PATH: return "a path string";
        case SB_CFG_SIZE: return "a size such as 512, \"64KiB\" or \"16MiB\"";
        }
        return "a value";
    }

    ConfigValue convert(const sb_config_field& f, const std::string& text, bool is_default) const {
        auto fail = [&](const std::string& why) {
            return std::runtime_error("config key '" + std::string(f.key) + "' (" + where() +
                                      (is_default ? ", schema default" : "") + "): " + why);
        };
        auto toml = impl::parse_toml(text);
        if (!toml)
            throw fail("not a TOML value (strings need quotes, e.g. \"\\\"text\\\"\")");
        ConfigValue v;
        v.field = f;
        if (!(f.flags & SB_CFG_MULTI)) {
            if (toml->kind == impl::Toml::Array)
                throw fail(std::string("expected ") + type_name(f.type) + ", not an array");
            scalar(f, *toml, v, fail);
            return v;
        }
        if (toml->kind != impl::Toml::Array)
            throw fail(std::string("expected an array of values, each ") + type_name(f.type));
        // Bounds apply to each number, or to the length of other arrays.
        bool length_bound = f.type != SB_CFG_INT && f.type != SB_CFG_FLOAT &&
                            f.type != SB_CFG_DURATION && f.type != SB_CFG_SIZE;
        if (length_bound) {
            double n = static_cast<double>(toml->items.size());
            if ((f.flags & SB_CFG_HAS_MIN) && n < f.min)
                throw fail("needs at least " + impl::number_text(f.min) + " element(s)");
            if ((f.flags & SB_CFG_HAS_MAX) && n > f.max)
                throw fail("allows at most " + impl::number_text(f.max) + " element(s)");
        }
        for (const auto& item : toml->items) {
            if (item.kind == impl::Toml::Array) throw fail("nested arrays are not allowed");
            ConfigValue one;
            scalar(f, item, one, fail, !length_bound);
            v.items.push_back(spell(f.type, item, one));
        }
        return v;
    }

    // The element text config_list_string returns: strings as they are,
    // numbers and booleans in their TOML spelling.
    static std::string spell(sb_config_type type, const impl::Toml& t, const ConfigValue& v) {
        switch (type) {
        case SB_CFG_STRING:
        case SB_CFG_PATH: return v.text;
        case SB_CFG_BOOL: return v.i ? "true" : "false";
        case SB_CFG_INT: return std::to_string(v.i);
        case SB_CFG_FLOAT: {
            std::string out;
            sb::detail::append_json_double(out, v.f);
            return out;
        }
        default: return t.kind == impl::Toml::String ? t.s : std::to_string(v.i);
        }
    }

    template <class Fail>
    static void scalar(const sb_config_field& f, const impl::Toml& t, ConfigValue& v,
                       const Fail& fail, bool check_range = true) {
        auto expected = [&] { return fail(std::string("expected ") + type_name(f.type)); };
        auto range = [&](double x, const std::string& shown) {
            if (!check_range) return;
            std::string unit = f.type == SB_CFG_DURATION ? " ms"
                               : f.type == SB_CFG_SIZE   ? " bytes"
                                                         : "";
            if ((f.flags & SB_CFG_HAS_MIN) && x < f.min)
                throw fail(shown + unit + " is below the minimum " + impl::number_text(f.min) +
                           unit);
            if ((f.flags & SB_CFG_HAS_MAX) && x > f.max)
                throw fail(shown + unit + " is above the maximum " + impl::number_text(f.max) +
                           unit);
        };
        switch (f.type) {
        case SB_CFG_STRING:
        case SB_CFG_PATH:
            if (t.kind != impl::Toml::String) throw expected();
            v.text = (f.flags & SB_CFG_SECRET) ? resolve_secret(t.s, fail) : t.s;
            if (f.type == SB_CFG_PATH && v.text.empty()) throw fail("the path is empty");
            if (f.choices) {
                std::string allowed;
                for (const char* const* c = f.choices; *c; ++c) {
                    if (v.text == *c) return;
                    allowed += (allowed.empty() ? "" : ", ") + std::string(*c);
                }
                throw fail("must be one of: " + allowed);
            }
            return;
        case SB_CFG_INT:
            if (t.kind != impl::Toml::Integer) throw expected();
            v.i = t.i;
            v.f = static_cast<double>(t.i);
            range(v.f, std::to_string(t.i));
            return;
        case SB_CFG_FLOAT:
            if (t.kind != impl::Toml::Integer && t.kind != impl::Toml::Float) throw expected();
            v.f = t.kind == impl::Toml::Integer ? static_cast<double>(t.i) : t.f;
            range(v.f, impl::number_text(v.f));
            return;
        case SB_CFG_BOOL:
            if (t.kind != impl::Toml::Boolean) throw expected();
            v.i = t.b ? 1 : 0;
            return;
        case SB_CFG_DURATION: {
            auto ms = t.kind == impl::Toml::String ? impl::parse_duration(t.s) : std::nullopt;
            if (!ms) throw expected();
            v.i = *ms;
            range(static_cast<double>(*ms), std::to_string(*ms));
            return;
        }
        case SB_CFG_SIZE: {
            std::optional<std::int64_t> bytes;
            if (t.kind == impl::Toml::Integer && t.i >= 0) bytes = t.i;
            if (t.kind == impl::Toml::String) bytes = impl::parse_size(t.s);
            if (!bytes) throw expected();
            v.i = *bytes;
            range(static_cast<double>(*bytes), std::to_string(*bytes));
            return;
        }
        }
        throw expected();
    }

    // "env:NAME" or "file:PATH"; the value itself never appears in a message.
    template <class Fail>
    static std::string resolve_secret(const std::string& ref, const Fail& fail) {
        if (ref.rfind("env:", 0) == 0) {
            const char* v = std::getenv(ref.c_str() + 4);
            if (!v) throw fail("secret environment variable " + ref.substr(4) + " is not set");
            return v;
        }
        if (ref.rfind("file:", 0) == 0) {
            std::ifstream in(ref.substr(5), std::ios::binary);
            if (!in) throw fail("cannot read secret file " + ref.substr(5));
            std::string v((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
            while (!v.empty() && (v.back() == '\n' || v.back() == '\r')) v.pop_back();
            return v;
        }
        throw fail("a secret must be given as \"env:NAME\" or \"file:PATH\"");
    }

    // --- helpers ------------------------------------------------------------

    sb_host_ctx* ctx() { return reinterpret_cast<sb_host_ctx*>(this); }
    static Harness& of(sb_host_ctx* c) { return *reinterpret_cast<Harness*>(c); }

    void ensure_data_dir() {
        if (data_dir_.empty()) {
            std::random_device rd;
            std::mt19937_64 gen(rd());
            for (int tries = 0; tries < 100; ++tries) {
                char name[40];
                std::snprintf(name, sizeof name, "sb-harness-%016llx",
                              static_cast<unsigned long long>(gen()));
                auto dir = std::filesystem::temp_directory_path() / name;
                if (std::filesystem::create_directory(dir)) {
                    data_dir_ = dir;
                    own_data_dir_ = true;
                    return;
                }
            }
            throw std::runtime_error("Harness: cannot create a temporary data directory");
        }
        std::filesystem::create_directories(data_dir_);
    }

    void need_created(const char* what) const {
        if (!instance_ptr_)
            throw std::logic_error(std::string("Harness::") + what + ": create() first");
    }
    void need_started(const char* what) const {
        if (phase_ != Phase::Started)
            throw std::logic_error(std::string("Harness::") + what + ": start() first");
    }

    // Runs a hook; a non-OK result is logged with the hook's set_error message,
    // as the daemon logs it.
    template <class F>
    sb_status run(const char* hook, F&& body) {
        {
            std::lock_guard lock(mu_);
            last_error_.clear();
        }
        sb_status s = body();
        if (s != SB_OK && s != SB_IDLE && s != SB_PENDING && s != SB_DUPLICATE) {
            std::string why = last_error();
            note(SB_LOG_WARN, std::string(hook) + " returned " + sb::status_name(s) +
                                  (why.empty() ? "" : ": " + why));
        }
        return s;
    }

    bool last_error_set() const {
        std::lock_guard lock(mu_);
        return !last_error_.empty();
    }

    // A line from the harness itself (a plugin mistake or a hook failure).
    void note(sb_log_level level, const std::string& message) {
        add_log(level, "harness: " + message);
    }
    void add_log(sb_log_level level, std::string message) {
        if (level < log_level_) return;
        if (echo_)
            std::cerr << "[" << int(level) << "] " << active_name_ << ": " << message << "\n";
        std::lock_guard lock(mu_);
        logs_.push_back({level, std::move(message)});
    }

    void drop_callbacks() {
        std::lock_guard lock(mu_);
        routes_.clear();
        timers_.clear();
    }

    std::string next_record_id() {
        char buf[32];
        std::snprintf(buf, sizeof buf, "rec-%06llu",
                      static_cast<unsigned long long>(next_record_++));
        return buf;
    }

    const ConfigValue* value(const char* key, bool (*fits)(const ConfigValue&), const char* as) {
        if (!key) return nullptr;
        auto it = values_.find(key);
        if (it == values_.end()) {
            bool declared =
                std::any_of(schema_.begin(), schema_.end(),
                            [&](const sb_config_field& f) { return !std::strcmp(f.key, key); });
            if (!declared)
                note(SB_LOG_WARN, std::string("plugin read undeclared config key '") + key + "'");
            return nullptr;
        }
        if (!fits(it->second)) {
            note(SB_LOG_WARN, std::string("plugin read config key '") + key + "' as " + as +
                                  ", which its schema does not declare");
            return nullptr;
        }
        return &it->second;
    }

    // Emit without the lock held; the caller checks availability.
    sb_status commit(std::unique_ptr<sb_record> r) {
        if (!r) return SB_ERR_INVALID;
        if (r->data.leaves().empty() && r->data.attachments().empty()) {
            note(SB_LOG_WARN, "emit refused: the record has no fields and no attachments");
            return SB_ERR_INVALID;
        }
        std::lock_guard lock(mu_);
        if (const char* ext = r->data.meta(SB_META_EXTERNAL_ID))
            if (!seen_.insert({active_name_, ext}).second) return SB_DUPLICATE;
        std::int64_t now = now_.load();
        r->data.set_meta("id", next_record_id());
        r->data.set_meta("source", active_name_);
        r->data.set_meta("received_at", rfc3339(now));
        r->data.set_meta("expires_at", rfc3339(now + kRetentionMs));
        emitted_.emplace_back(std::move(*r));
        return SB_OK;
    }

    bool accepting(const char* what) {
        if (phase_ != Phase::Starting && phase_ != Phase::Started && phase_ != Phase::Stopping) {
            note(SB_LOG_ERROR, std::string(what) + " outside start..stop");
            return false;
        }
        if (!journal_available_) return false;
        int left = commits_left_.load();
        while (left >= 0) {
            if (left == 0) return false;
            if (commits_left_.compare_exchange_weak(left, left - 1)) break;
        }
        return true;
    }

    // --- the host API ---------------------------------------------------------

    static void h_set_error(sb_host_ctx* c, const char* message) {
        Harness& h = of(c);
        std::lock_guard lock(h.mu_);
        h.last_error_ = message ? message : "";
    }
    static void h_log(sb_host_ctx* c, sb_log_level level, const char* message) {
        of(c).add_log(level, message ? message : "");
    }
    static int h_log_enabled(sb_host_ctx* c, sb_log_level level) {
        return level >= of(c).log_level_ ? 1 : 0;
    }
    static void h_counter_add(sb_host_ctx* c, const char* name, std::uint64_t delta) {
        Harness& h = of(c);
        if (!name || !impl::is_metric_name(name)) {
            h.note(SB_LOG_WARN, "counter name is not [a-z0-9_]+; ignored");
            return;
        }
        std::lock_guard lock(h.mu_);
        h.counters_[name] += delta;
    }
    static void h_gauge_set(sb_host_ctx* c, const char* name, double value) {
        Harness& h = of(c);
        if (!name || !impl::is_metric_name(name)) {
            h.note(SB_LOG_WARN, "gauge name is not [a-z0-9_]+; ignored");
            return;
        }
        std::lock_guard lock(h.mu_);
        h.gauges_[name] = value;
    }
    static std::int64_t h_now_ms(sb_host_ctx* c) { return of(c).now_.load(); }

    static int h_config_string(sb_host_ctx* c, const char* key, const char** out) {
        const ConfigValue* v = of(c).value(key, [](const ConfigValue& x) {
            return !(x.field.flags & SB_CFG_MULTI) &&
                   (x.field.type == SB_CFG_STRING || x.field.type == SB_CFG_PATH);
        }, "a string");
        if (!v || !out) return 0;
        *out = v->text.c_str();
        return 1;
    }
    static int h_config_int(sb_host_ctx* c, const char* key, std::int64_t* out) {
        const ConfigValue* v = of(c).value(key, [](const ConfigValue& x) {
            return !(x.field.flags & SB_CFG_MULTI) &&
                   (x.field.type == SB_CFG_INT || x.field.type == SB_CFG_DURATION ||
                    x.field.type == SB_CFG_SIZE);
        }, "an integer");
        if (!v || !out) return 0;
        *out = v->i;
        return 1;
    }
    static int h_config_float(sb_host_ctx* c, const char* key, double* out) {
        const ConfigValue* v = of(c).value(key, [](const ConfigValue& x) {
            return !(x.field.flags & SB_CFG_MULTI) &&
                   (x.field.type == SB_CFG_FLOAT || x.field.type == SB_CFG_INT);
        }, "a number");
        if (!v || !out) return 0;
        *out = v->f;
        return 1;
    }
    static int h_config_bool(sb_host_ctx* c, const char* key, int* out) {
        const ConfigValue* v = of(c).value(key, [](const ConfigValue& x) {
            return !(x.field.flags & SB_CFG_MULTI) && x.field.type == SB_CFG_BOOL;
        }, "a boolean");
        if (!v || !out) return 0;
        *out = static_cast<int>(v->i);
        return 1;
    }
    static std::size_t h_config_list_size(sb_host_ctx* c, const char* key) {
        const ConfigValue* v = of(c).value(key, [](const ConfigValue& x) {
            return (x.field.flags & SB_CFG_MULTI) != 0;
        }, "a list");
        return v ? v->items.size() : 0;
    }
    static int h_config_list_string(sb_host_ctx* c, const char* key, std::size_t index,
                                    const char** out) {
        const ConfigValue* v = of(c).value(key, [](const ConfigValue& x) {
            return (x.field.flags & SB_CFG_MULTI) != 0;
        }, "a list");
        if (!v || !out || index >= v->items.size()) return 0;
        *out = v->items[index].c_str();
        return 1;
    }
    static const char* h_instance_name(sb_host_ctx* c) { return of(c).active_name_.c_str(); }
    static const char* h_data_dir(sb_host_ctx* c) { return of(c).data_dir_text_.c_str(); }

    static sb_record* h_record_new(sb_host_ctx*) { return new (std::nothrow) sb_record; }
    static void h_record_free(sb_host_ctx*, sb_record* r) { delete r; }

    static sb_status h_emit(sb_host_ctx* c, sb_record* record) {
        std::unique_ptr<sb_record> owned(record); // ownership passes whatever the result
        Harness& h = of(c);
        if (!h.accepting("emit")) return SB_ERR_UNAVAILABLE;
        return h.commit(std::move(owned));
    }
    static sb_status h_emit_batch(sb_host_ctx* c, sb_record* const* records, std::size_t n,
                                  const char* state_key, const char* state_value,
                                  sb_status* results) {
        Harness& h = of(c);
        std::vector<std::unique_ptr<sb_record>> owned;
        for (std::size_t k = 0; k < n; ++k) owned.emplace_back(records ? records[k] : nullptr);
        if (!h.accepting("emit_batch")) {
            for (std::size_t k = 0; results && k < n; ++k) results[k] = SB_ERR_UNAVAILABLE;
            return SB_ERR_UNAVAILABLE;
        }
        for (std::size_t k = 0; k < n; ++k) {
            sb_status s = h.commit(std::move(owned[k]));
            if (results) results[k] = s;
        }
        if (state_key) {
            std::lock_guard lock(h.mu_);
            if (state_value)
                h.state_[state_key] = state_value;
            else
                h.state_.erase(state_key);
        }
        return SB_OK;
    }
    // The harness commits in emit_begin (as emit_batch) and keeps the
    // outcome for emit_wait; a batch begun while the one before is not
    // yet waited for and did not commit does not commit either.
    static sb_status h_emit_begin(sb_host_ctx* c, sb_record* const* records, std::size_t n,
                                  const char* state_key, const char* state_value,
                                  std::uint64_t* ticket) {
        Harness& h = of(c);
        if (!ticket) {
            for (std::size_t k = 0; records && k < n; ++k) delete records[k];
            return SB_ERR_INVALID;
        }
        Begun b;
        b.results.assign(n, SB_OK);
        bool broken;
        {
            std::lock_guard lock(h.mu_);
            auto last = h.begun_.find(h.last_ticket_);
            broken = last != h.begun_.end() && last->second.status != SB_OK;
        }
        if (broken) {
            for (std::size_t k = 0; records && k < n; ++k) delete records[k];
            b.status = SB_ERR_UNAVAILABLE;
        } else {
            b.status = h_emit_batch(c, records, n, state_key, state_value, b.results.data());
        }
        std::lock_guard lock(h.mu_);
        *ticket = ++h.last_ticket_;
        h.begun_.emplace(*ticket, std::move(b));
        return SB_OK;
    }
    static sb_status h_emit_wait(sb_host_ctx* c, std::uint64_t ticket, sb_status* results) {
        Harness& h = of(c);
        std::lock_guard lock(h.mu_);
        auto it = h.begun_.find(ticket);
        if (it == h.begun_.end()) {
            h.last_error_ = "emit_wait: unknown ticket (never begun, or already waited for)";
            return SB_ERR_INVALID;
        }
        if (results) std::copy(it->second.results.begin(), it->second.results.end(), results);
        sb_status s = it->second.status;
        h.begun_.erase(it);
        return s;
    }
    static sb_status h_quarantine(sb_host_ctx* c, const void* bytes, std::size_t len,
                                  const char* reason, const char* ref) {
        Harness& h = of(c);
        if (!bytes && len) return SB_ERR_INVALID;
        std::lock_guard lock(h.mu_);
        h.quarantined_.push_back({std::string(static_cast<const char*>(bytes), len),
                                  reason ? reason : "unspecified", ref ? ref : ""});
        return SB_OK;
    }
    static int h_state_get(sb_host_ctx* c, const char* key, char** out) {
        Harness& h = of(c);
        if (!key || !out) return 0;
        std::lock_guard lock(h.mu_);
        auto it = h.state_.find(key);
        if (it == h.state_.end()) return 0;
        char* copy = static_cast<char*>(std::malloc(it->second.size() + 1));
        if (!copy) return 0;
        std::memcpy(copy, it->second.c_str(), it->second.size() + 1);
        *out = copy;
        return 1;
    }
    static sb_status h_state_set(sb_host_ctx* c, const char* key, const char* value) {
        Harness& h = of(c);
        if (!key || !*key) return SB_ERR_INVALID;
        std::lock_guard lock(h.mu_);
        if (value)
            h.state_[key] = value;
        else
            h.state_.erase(key);
        return SB_OK;
    }
    static void h_free(void* p) { std::free(p); }
    static void h_complete(sb_host_ctx* c, std::uint64_t id, sb_status status,
                           const char* receipt) {
        Harness& h = of(c);
        std::lock_guard lock(h.mu_);
        h.completions_.push_back({id, status, receipt ? receipt : ""});
    }

    static sb_status h_audit(sb_host_ctx* c, const char* event, const char* record_id,
                             const char* detail) {
        Harness& h = of(c);
        if (!event || !sb::detail::audit_event_valid(event)) {
            h.note(SB_LOG_WARN, "audit event is not [a-z_]{1,32}; refused");
            return SB_ERR_INVALID;
        }
        if (record_id && !sb::detail::audit_record_id_valid(record_id)) {
            h.note(SB_LOG_WARN, "audit record id is not [A-Za-z0-9._:-]{1,64}; refused");
            return SB_ERR_INVALID;
        }
        if (!h.audit_available_) return SB_ERR_UNAVAILABLE;
        std::lock_guard lock(h.mu_);
        h.audits_.push_back({event, record_id ? record_id : "",
                             sb::detail::audit_detail_sanitise(detail ? detail : "")});
        return SB_OK;
    }

    static sb_status h_http_route(sb_host_ctx* c, const char* method, const char* path,
                                  sb_http_handler handler, void* user) {
        Harness& h = of(c);
        if (!method || !path || !handler) return SB_ERR_INVALID;
        std::string p(path), m(method);
        if (!(h.d_.capabilities & SB_CAP_HTTP)) {
            h.note(SB_LOG_ERROR, "http_route " + p + ": the descriptor lacks SB_CAP_HTTP");
            return SB_ERR_UNSUPPORTED;
        }
        if (h.phase_ != Phase::Starting) {
            h.note(SB_LOG_ERROR, "http_route " + p + ": routes may be registered only in start");
            return SB_ERR_INVALID;
        }
        bool prefix_ok = (p.rfind("/hooks/", 0) == 0 || p.rfind("/plugins/", 0) == 0) &&
                         p.back() != '/' && p.find("//") == std::string::npos;
        if (!prefix_ok) {
            h.note(SB_LOG_ERROR, "http_route " + p + ": path must start with /hooks/ or /plugins/");
            return SB_ERR_INVALID;
        }
        {
            std::lock_guard lock(h.mu_);
            bool taken = std::any_of(h.routes_.begin(), h.routes_.end(), [&](const Route& r) {
                return r.path == p && (r.method == m || r.method == "*" || m == "*");
            });
            if (!taken) {
                h.routes_.push_back({m, p, handler, user});
                return SB_OK;
            }
        }
        h.note(SB_LOG_ERROR, "http_route " + m + " " + p + ": already taken");
        return SB_ERR_INVALID;
    }
    static const Request& req(const sb_http_request* r) {
        return *reinterpret_cast<const Request*>(r);
    }
    static const char* h_http_method(const sb_http_request* r) { return req(r).method.c_str(); }
    static const char* h_http_path(const sb_http_request* r) { return req(r).path.c_str(); }
    static const char* h_http_query(const sb_http_request* r) { return req(r).query.c_str(); }
    static const char* h_http_header(const sb_http_request* r, const char* name) {
        if (!name) return nullptr;
        auto same = [](std::string_view a, std::string_view b) {
            return a.size() == b.size() &&
                   std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
                       return std::tolower(static_cast<unsigned char>(x)) ==
                              std::tolower(static_cast<unsigned char>(y));
                   });
        };
        for (const auto& [k, v] : req(r).headers)
            if (same(k, name)) return v.c_str();
        return nullptr;
    }
    static const char* h_http_body(const sb_http_request* r, std::size_t* len) {
        if (len) *len = req(r).body.size();
        return req(r).body.c_str();
    }
    static void h_http_respond(sb_http_response* r, int status, const char* content_type,
                               const char* body, std::size_t len) {
        auto& resp = *reinterpret_cast<Response*>(r);
        if (resp.responded) return; // "call once": the first answer stands
        resp.responded = true;
        resp.reply.status = status;
        resp.reply.content_type = content_type ? content_type : "";
        resp.reply.body.assign(body ? body : "", body ? len : 0);
    }
    static void h_http_set_header(sb_http_response* r, const char* name, const char* value) {
        if (!name || !value) return;
        reinterpret_cast<Response*>(r)->reply.headers[name] = value;
    }

    static std::uint64_t h_timer_start(sb_host_ctx* c, std::int64_t delay_ms,
                                       std::int64_t interval_ms, sb_timer_fn fn, void* user) {
        Harness& h = of(c);
        if (!fn || delay_ms < 0 || interval_ms < 0) return 0;
        if (!(h.d_.capabilities & SB_CAP_TIMERS)) {
            h.note(SB_LOG_ERROR, "timer_start: the descriptor lacks SB_CAP_TIMERS");
            return 0;
        }
        std::lock_guard lock(h.mu_);
        std::uint64_t id = h.next_timer_++;
        h.timers_[id] = Timer{h.now_.load() + delay_ms, interval_ms, fn, user};
        return id;
    }
    static void h_timer_cancel(sb_host_ctx* c, std::uint64_t id) {
        Harness& h = of(c);
        std::lock_guard lock(h.mu_);
        h.timers_.erase(id);
    }

    // --- data ---------------------------------------------------------------

    std::string origin_;
    sb::detail::Descriptor read_; // what read_descriptor accepted
    sb_plugin_descriptor d_{};    // a copy of read_.descriptor
    std::vector<sb_config_field> schema_;
    sb_host_api api_{};
    bool echo_ = false;

    std::map<std::string, std::string> config_text_;
    std::string instance_ = "test";
    std::filesystem::path data_dir_;
    bool own_data_dir_ = false;
    sb_log_level log_level_ = SB_LOG_TRACE;
    std::atomic<bool> journal_available_{true};
    std::atomic<int> commits_left_{-1}; // journal_fails_after; -1: no limit
    struct Begun {                      // emit_begin's outcome, until emit_wait
        sb_status status = SB_ERR_UNAVAILABLE;
        std::vector<sb_status> results;
    };
    std::map<std::uint64_t, Begun> begun_;
    std::uint64_t last_ticket_ = 0;

    // The live instance; values_, active_name_ and data_dir_text_ stay put
    // from create to destroy because the plugin holds pointers into them.
    sb_instance* instance_ptr_ = nullptr;
    std::atomic<Phase> phase_{Phase::None};
    std::map<std::string, ConfigValue> values_;
    std::string active_name_;
    std::string data_dir_text_;

    std::atomic<std::int64_t> now_{kEpochMs};
    std::map<std::uint64_t, Timer> timers_;
    std::uint64_t next_timer_ = 1;
    std::vector<Route> routes_;

    mutable std::mutex mu_;
    std::vector<TestRecord> emitted_;
    std::set<std::pair<std::string, std::string>> seen_; // (source, external_id)
    std::atomic<std::uint64_t> next_record_{1};
    std::uint64_t next_request_ = 1;
    std::uint64_t next_sequence_ = 1;
    std::map<std::string, Outbox> outbox_;
    std::vector<Quarantined> quarantined_;
    std::vector<LogLine> logs_;
    std::map<std::string, std::uint64_t> counters_;
    std::map<std::string, double> gauges_;
    std::vector<Completion> completions_;
    std::vector<AuditEntry> audits_;
    std::atomic<bool> audit_available_{true};
    std::vector<DeliveryLog> deliveries_;
    std::map<std::string, std::string> state_;
    std::string last_error_;
};

} // namespace sb::testing
