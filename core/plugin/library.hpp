#pragma once

// Loading plugin libraries: pin check, Boost.DLL, descriptor checks.

#include <switchboard/detail/abi.hpp>
#include <switchboard/plugin.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace boost::dll {
class shared_library;
}

namespace switchboard::plugin {

// "source", "destination" or "transform", as the CLI, the admin API and the
// descriptor listing name a plugin's kind.
inline const char* kind_name(sb_plugin_kind k) {
    switch (k) {
    case SB_KIND_SOURCE: return "source";
    case SB_KIND_DESTINATION: return "destination";
    case SB_KIND_TRANSFORM: return "transform";
    }
    return "unknown";
}

// A plugin library that passed every check. Instances hold a shared_ptr to
// it, so the library stays mapped while any instance lives.
struct LoadedPlugin {
    std::filesystem::path file;
    std::string sha256; // empty unless the file was pinned
    std::shared_ptr<boost::dll::shared_library> library;
    // The plugin's descriptor read into this host's layout (see
    // sb::detail::read_descriptor); `descriptor` points at it.
    sb::detail::Descriptor normalized;
    const sb_plugin_descriptor* descriptor = nullptr;

    std::string name() const { return descriptor->name; }
};

struct Refusal {
    std::filesystem::path file;
    std::string reason; // what was expected and what was found
    bool directory = false; // a configured plugin directory, not a file
    std::string str() const {
        return directory ? "plugin directory " + file.string() + ": " + reason
                         : "plugin " + file.string() + ": refused: " + reason;
    }
};

struct LoadOptions {
    // File name -> expected lowercase hex SHA-256.
    std::map<std::string, std::string> pins;
    bool require_pins = false;
};

// Loads one library. On refusal returns nullptr and fills `refusal`. The pin
// (if any) is checked on the file's bytes before the library is opened, so a
// mismatching file never runs any code, not even static constructors.
std::shared_ptr<const LoadedPlugin> load_plugin(const std::filesystem::path& file,
                                                const LoadOptions& options, Refusal& refusal);

// Checks a descriptor's header, version and contents, including that every
// config default passes its own schema, and copies it into `out`. Returns an
// empty string when it is acceptable, otherwise the reason.
std::string check_descriptor(const sb_plugin_descriptor* d, sb::detail::Descriptor& out);

} // namespace switchboard::plugin
