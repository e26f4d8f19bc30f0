/* Writes audit entries through the host table (ABI 1.1), after checking that
 * the host has the function, as every plugin must: good ones, a malformed
 * event and record id (refused), and a detail that the host must sanitise.
 * Counts the answers in counters audit_ok / audit_invalid / audit_other. */
#include "plugin_common.h"

static void count(sb_instance* self, sb_status s) {
    const char* name = s == SB_OK ? "audit_ok" : s == SB_ERR_INVALID ? "audit_invalid" : "audit_other";
    self->host->counter_add(self->ctx, name, 1);
}

static sb_status audit_poll(sb_instance* self) {
    const sb_host_api* h = self->host;
    char long_detail[400];
    if (!SB_HAS_FIELD(h, sb_host_api, audit) || !h->audit) return SB_ERR_UNSUPPORTED;
    count(self, h->audit(self->ctx, "handshake_refused", NULL,
                         "key=abc from tcp://127.0.0.1\nforged=line\t\x01"));
    memset(long_detail, 'x', sizeof long_detail - 1);
    long_detail[sizeof long_detail - 1] = '\0';
    count(self, h->audit(self->ctx, "about_record", "R17-3", long_detail));
    count(self, h->audit(self->ctx, "no_detail", NULL, NULL));
    count(self, h->audit(self->ctx, "Bad-Event", NULL, "x"));
    count(self, h->audit(self->ctx, "this_event_name_is_far_too_long_to_keep", NULL, "x"));
    count(self, h->audit(self->ctx, "bad_record", "R1 2;x=y", "x"));
    count(self, h->audit(self->ctx, NULL, NULL, "x"));
    return SB_IDLE;
}

static sb_plugin_descriptor descriptor = TEST_DESCRIPTOR("c-audit");

SB_EXPORT const sb_plugin_descriptor* switchboard_plugin_descriptor(void) {
    descriptor.capabilities = SB_CAP_POLL;
    descriptor.poll = audit_poll;
    return &descriptor;
}
