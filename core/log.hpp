#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace switchboard::log {

// Same numbering as sb_log_level, plus Off.
enum class Level { Trace = 0, Debug = 1, Info = 2, Warn = 3, Error = 4, Off = 5 };

std::optional<Level> parse_level(std::string_view s);
const char* level_name(Level level);

enum class Format { Text, Json };

// One line per event: time, level, component, optional instance, message.
// Levels can be set per component ("http", "config") and per plugin instance
// name; the most specific wins. Messages must never carry personal data:
// callers log ids, counts and field names, not values. Newlines inside a
// message are flattened so that one event stays one line.
class Logger {
public:
    static Logger& get();

    void configure(Level level, std::map<std::string, Level> overrides, Format format);
    bool enabled(Level level, std::string_view component, std::string_view instance = {}) const;
    void write(Level level, std::string_view component, std::string_view instance,
               std::string_view message);

    // Where lines go (default: stderr). Tests capture them here.
    void set_sink(std::function<void(const std::string& line)> sink);

private:
    Logger() = default;
    Level level_ = Level::Info;
    std::map<std::string, Level, std::less<>> overrides_;
    Format format_ = Format::Text;
    std::function<void(const std::string&)> sink_;
};

// Convenience for core components.
inline void write(Level level, std::string_view component, std::string_view message) {
    Logger::get().write(level, component, {}, message);
}
inline void debug(std::string_view component, std::string_view m) { write(Level::Debug, component, m); }
inline void info(std::string_view component, std::string_view m) { write(Level::Info, component, m); }
inline void warn(std::string_view component, std::string_view m) { write(Level::Warn, component, m); }
inline void error(std::string_view component, std::string_view m) { write(Level::Error, component, m); }

} // namespace switchboard::log
