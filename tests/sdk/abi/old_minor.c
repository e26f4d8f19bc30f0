/* Built for ABI 1.0, before the host table had `audit`: a 1.1 host still
 * loads and runs it. */
#include "plugin_common.h"

static sb_plugin_descriptor descriptor = TEST_DESCRIPTOR("old-minor");

SB_EXPORT const sb_plugin_descriptor* switchboard_plugin_descriptor(void) {
    descriptor.abi_minor = 0;
    return &descriptor;
}
