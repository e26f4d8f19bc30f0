#include "cli/commands.hpp"

int main(int argc, char** argv) { return switchboard::cli::main(argc, argv); }
