#pragma once

// Commands that read (or ask for changes to) a node's journal: explain,
// retention, audit, deadletters.

#include "cli/args.hpp"

namespace switchboard::cli {

int cmd_explain(const Args& a);
int cmd_retention(const Args& a);
int cmd_audit(const Args& a);
int cmd_deadletters(const Args& a);

} // namespace switchboard::cli
