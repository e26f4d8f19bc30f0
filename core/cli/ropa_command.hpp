#pragma once

// `switchboard ropa`: the record of processing (UK GDPR Art. 30) generated
// from a config, and with --diff the change a new config makes to it.

namespace switchboard::cli {

extern const char* const kRopaHelp;

// argv[1] is "ropa". Returns the process exit code.
int cmd_ropa(int argc, char** argv);

} // namespace switchboard::cli
