#pragma once

#include <string>

namespace switchboard::cli {

// The `switchboard` command line: run, check, plugins, version, help.
int main(int argc, char** argv);

std::string version_text();

} // namespace switchboard::cli
