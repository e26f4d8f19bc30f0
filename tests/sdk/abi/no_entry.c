/* A shared library that is not a Switchboard plugin: no entry point. */
#include <switchboard/plugin.h>

SB_EXPORT int not_a_plugin(void) { return 42; }
