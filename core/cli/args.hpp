#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace switchboard::cli {

// The options of a `switchboard` command line, as parsed.
struct Args {
    std::optional<std::filesystem::path> config;
    std::vector<std::filesystem::path> plugin_dirs;
    std::vector<std::string> overrides;
    std::vector<std::string> positional;
    std::optional<std::string> source, within, destination, dir;
    bool json = false;
    bool help = false;
    bool dry_run = false;
    bool pending = false;
    bool all = false;
};


} // namespace switchboard::cli
