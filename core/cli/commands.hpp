#pragma once

#include <string>

namespace switchboard::cli {

// The `switchboard` command line: run, check, plugins, version, help.
int main(int argc, char** argv);

std::string version_text();
// The malloc this process runs on: "jemalloc 5.3.0-0-g…", "tcmalloc
// (gperftools 2.10)" or "glibc 2.36" (docs/performance.md says why it matters).
std::string malloc_text();

} // namespace switchboard::cli
