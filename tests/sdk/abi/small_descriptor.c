/* Claims the current version but stamps a descriptor that is too small. */
#include "plugin_common.h"

static sb_plugin_descriptor descriptor = TEST_DESCRIPTOR("small-descriptor");

SB_EXPORT const sb_plugin_descriptor* switchboard_plugin_descriptor(void) {
    descriptor.struct_size = 64;
    return &descriptor;
}
