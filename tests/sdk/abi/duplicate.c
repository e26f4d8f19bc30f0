/* Built twice under two file names: both call themselves "duplicate". */
#include "plugin_common.h"

static const sb_plugin_descriptor descriptor = TEST_DESCRIPTOR("duplicate");

SB_EXPORT const sb_plugin_descriptor* switchboard_plugin_descriptor(void) { return &descriptor; }
