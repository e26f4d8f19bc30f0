#pragma once

// Subject access, legal holds and erasure: `switchboard sar`, `hold`, `erase`.
// They parse their own options (many identifiers) and work on the journal
// of a node that may be running (see governance/holds.hpp).

namespace switchboard::cli {

int cmd_sar(int argc, char** argv);  // argv[1] == "sar"
int cmd_hold(int argc, char** argv); // argv[1] == "hold"
const char* sar_help();
const char* hold_help();
int cmd_erase(int argc, char** argv); // argv[1] == "erase"
const char* erase_help();

} // namespace switchboard::cli
