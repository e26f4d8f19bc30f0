/* Built for a newer minor than this host has. */
#include "plugin_common.h"

static sb_plugin_descriptor descriptor = TEST_DESCRIPTOR("newer-minor");

SB_EXPORT const sb_plugin_descriptor* switchboard_plugin_descriptor(void) {
    descriptor.abi_minor = SB_ABI_MINOR + 1;
    return &descriptor;
}
