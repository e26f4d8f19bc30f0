/* A valid plugin whose library constructor leaves a mark: the file named by
 * SB_CTOR_MARKER. The pin test proves that a plugin refused for its hash
 * never ran this code. */
#include "plugin_common.h"

#include <stdio.h>

__attribute__((constructor)) static void leave_mark(void) {
    const char* path = getenv("SB_CTOR_MARKER");
    if (!path) return;
    FILE* f = fopen(path, "a");
    if (f) {
        fputs("constructor ran\n", f);
        fclose(f);
    }
}

static const sb_plugin_descriptor descriptor = TEST_DESCRIPTOR("constructor-marker");

SB_EXPORT const sb_plugin_descriptor* switchboard_plugin_descriptor(void) { return &descriptor; }
