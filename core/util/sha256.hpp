#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace switchboard {

// SHA-256 of a file's bytes as lowercase hex, or nullopt with `error` set.
// Reads the file itself (never maps or opens it as a library), so a plugin
// can be checked before any of its code runs.
std::optional<std::string> sha256_file(const std::filesystem::path& file, std::string& error);

} // namespace switchboard
