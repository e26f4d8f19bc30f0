#include "log.hpp"

#include "util/text.hpp"

#include <switchboard/detail/record_data.hpp>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <shared_mutex>

namespace switchboard::log {

namespace {
std::shared_mutex config_mutex;
std::mutex write_mutex;

std::int64_t wall_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// Keeps an event on one line and drops control characters.
std::string one_line(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        unsigned char u = static_cast<unsigned char>(c);
        if (c == '\n' || c == '\r' || c == '\t')
            out.push_back(' ');
        else if (u < 0x20 || u == 0x7f)
            out.push_back('?');
        else
            out.push_back(c);
    }
    return out;
}
} // namespace

std::optional<Level> parse_level(std::string_view s) {
    if (s == "trace") return Level::Trace;
    if (s == "debug") return Level::Debug;
    if (s == "info") return Level::Info;
    if (s == "warn") return Level::Warn;
    if (s == "error") return Level::Error;
    if (s == "off") return Level::Off;
    return std::nullopt;
}

const char* level_name(Level level) {
    switch (level) {
    case Level::Trace: return "trace";
    case Level::Debug: return "debug";
    case Level::Info: return "info";
    case Level::Warn: return "warn";
    case Level::Error: return "error";
    case Level::Off: return "off";
    }
    return "?";
}

Logger& Logger::get() {
    static Logger logger;
    return logger;
}

void Logger::configure(Level level, std::map<std::string, Level> overrides, Format format) {
    std::unique_lock lock(config_mutex);
    level_ = level;
    overrides_.clear();
    for (auto& [k, v] : overrides) overrides_.emplace(k, v);
    format_ = format;
}

bool Logger::enabled(Level level, std::string_view component, std::string_view instance) const {
    std::shared_lock lock(config_mutex);
    Level threshold = level_;
    if (!instance.empty()) {
        if (auto it = overrides_.find(instance); it != overrides_.end()) return level >= it->second;
    }
    if (auto it = overrides_.find(component); it != overrides_.end()) threshold = it->second;
    return level >= threshold && level != Level::Off;
}

void Logger::write(Level level, std::string_view component, std::string_view instance,
                   std::string_view message) {
    if (!enabled(level, component, instance)) return;
    std::string line;
    Format format;
    {
        std::shared_lock lock(config_mutex);
        format = format_;
    }
    std::string ts = text::format_time_ms(wall_ms());
    if (format == Format::Json) {
        line = "{\"ts\":\"" + ts + "\",\"level\":\"" + level_name(level) + "\",\"component\":";
        sb::detail::append_json_string(line, component);
        if (!instance.empty()) {
            line += ",\"instance\":";
            sb::detail::append_json_string(line, instance);
        }
        line += ",\"msg\":";
        sb::detail::append_json_string(line, one_line(message));
        line += "}";
    } else {
        static const char* names[] = {"TRACE", "DEBUG", "INFO ", "WARN ", "ERROR", "OFF  "};
        line = ts + " " + names[static_cast<int>(level)] + " " + std::string(component);
        if (!instance.empty()) line += "[" + std::string(instance) + "]";
        line += ": " + one_line(message);
    }
    std::lock_guard lock(write_mutex);
    if (sink_) {
        sink_(line);
    } else {
        line.push_back('\n');
        std::fwrite(line.data(), 1, line.size(), stderr);
        std::fflush(stderr);
    }
}

void Logger::set_sink(std::function<void(const std::string&)> sink) {
    std::lock_guard lock(write_mutex);
    sink_ = std::move(sink);
}

} // namespace switchboard::log
