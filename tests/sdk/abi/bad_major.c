/* Built for an ABI major this host does not know. */
#include "plugin_common.h"

static sb_plugin_descriptor descriptor = TEST_DESCRIPTOR("bad-major");

SB_EXPORT const sb_plugin_descriptor* switchboard_plugin_descriptor(void) {
    descriptor.abi_major = SB_ABI_MAJOR + 1;
    return &descriptor;
}
