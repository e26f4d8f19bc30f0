/* A source in plain C that emits ahead (ABI 1.3): each poll begins two
 * batches of one record, the second while the first is not yet waited for,
 * then waits for both in order, waits for the second again and for a ticket
 * never given; what each wait returned is counted ("a_ok", "b_unavailable",
 * "again_invalid", ...). */
#include "plugin_common.h"

#include <stdio.h>

static void count(sb_instance* self, const char* what, sb_status s) {
    char name[64];
    snprintf(name, sizeof name, "%s_%s", what,
             s == SB_OK ? "ok" : s == SB_ERR_UNAVAILABLE ? "unavailable"
                        : s == SB_ERR_INVALID        ? "invalid"
                                                     : "other");
    self->host->counter_add(self->ctx, name, 1);
}

static sb_status c_poll(sb_instance* self) {
    if (!SB_HAS_FIELD(self->host, sb_host_api, emit_wait)) return SB_ERR_UNSUPPORTED;
    sb_record* a = test_record(self, "first");
    sb_record* b = test_record(self, "second");
    uint64_t ta = 0, tb = 0;
    count(self, "begin_a", self->host->emit_begin(self->ctx, &a, 1, "cursor", "a", &ta));
    count(self, "begin_b", self->host->emit_begin(self->ctx, &b, 1, "cursor", "b", &tb));
    sb_status results[1] = {SB_ERR_INTERNAL};
    count(self, "a", self->host->emit_wait(self->ctx, ta, results));
    count(self, "a_record", results[0]);
    count(self, "b", self->host->emit_wait(self->ctx, tb, NULL));
    count(self, "again", self->host->emit_wait(self->ctx, tb, NULL));
    count(self, "never", self->host->emit_wait(self->ctx, 12345, NULL));
    return SB_OK;
}

static sb_plugin_descriptor descriptor = TEST_DESCRIPTOR("c-ahead");

SB_EXPORT const sb_plugin_descriptor* switchboard_plugin_descriptor(void) {
    descriptor.poll = c_poll;
    descriptor.capabilities = SB_CAP_POLL;
    return &descriptor;
}
