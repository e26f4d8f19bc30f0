#pragma once

#include "config/schema.hpp"

#include <toml++/toml.h>

#include <filesystem>
#include <optional>

namespace switchboard::config {

// Reads `file` and the files it names in its top-level `include` key
// (a path or an array of paths, relative to the including file; includes may
// nest). The result is one table in which every node keeps the file, line and
// column it came from. Tables from several files merge; arrays of tables
// ([[route]]) concatenate; any other key defined twice is an error naming
// both places. Parse errors, unreadable files and include cycles are
// reported in `out`; the returned table holds whatever could be read.
// `complete` is false when some file could not be read or parsed.
toml::table load_files(const std::filesystem::path& file, Diagnostics& out, bool& complete);

} // namespace switchboard::config
