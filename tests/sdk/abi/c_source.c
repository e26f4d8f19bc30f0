/* A complete source plugin in plain C: it emits one record per poll through
 * the host table, with a field from its config. */
#include "plugin_common.h"

static sb_status c_start(sb_instance* self) {
    self->host->log(self->ctx, SB_LOG_INFO, "c-source started");
    return SB_OK;
}

static sb_status c_poll(sb_instance* self) {
    const char* greeting = NULL;
    if (!self->host->config_string(self->ctx, "greeting", &greeting)) {
        self->host->set_error(self->ctx, "no greeting configured");
        return SB_ERR_INVALID;
    }
    sb_record* r = test_record(self, greeting);
    self->polls++;
    self->host->counter_add(self->ctx, "polls", 1);
    return self->host->emit(self->ctx, r) == SB_OK ? SB_OK : SB_IDLE;
}

static sb_plugin_descriptor descriptor = TEST_DESCRIPTOR("c-source");

SB_EXPORT const sb_plugin_descriptor* switchboard_plugin_descriptor(void) {
    descriptor.start = c_start;
    descriptor.poll = c_poll;
    descriptor.capabilities = SB_CAP_POLL;
    return &descriptor;
}
