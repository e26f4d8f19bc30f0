/* Shared by the ABI test plugins: a minimal, valid plugin written in C,
 * which each test plugin then breaks in one way. Plain C on purpose: the
 * ABI must not need C++. */
#ifndef SB_TEST_PLUGIN_COMMON_H
#define SB_TEST_PLUGIN_COMMON_H

#include <switchboard/plugin.h>

#include <stdlib.h>
#include <string.h>

struct sb_instance {
    const sb_host_api* host;
    sb_host_ctx* ctx;
    int polls;
};

static sb_status test_create(const sb_host_api* host, sb_host_ctx* ctx, sb_instance** out) {
    sb_instance* self = (sb_instance*)calloc(1, sizeof *self);
    if (!self) return SB_ERR_INTERNAL;
    self->host = host;
    self->ctx = ctx;
    *out = self;
    return SB_OK;
}

static void test_destroy(sb_instance* self) { free(self); }

/* A new record with `text` at content.text and channel "test". */
static inline sb_record* test_record(sb_instance* self, const char* text) {
    sb_record* r = self->host->record_new(self->ctx);
    sb_value v;
    memset(&v, 0, sizeof v);
    v.type = SB_VALUE_STRING;
    v.str = text;
    v.len = strlen(text);
    self->host->record_set(r, "content.text", &v, "content.free_text");
    self->host->record_set_meta(r, SB_META_CHANNEL, "test");
    return r;
}

static const sb_config_field test_fields[] = {
    {sizeof(sb_config_field), "greeting", SB_CFG_STRING, 0, "\"hello\"", 0, 0, "what to say", NULL},
};

static const char* const test_categories[] = {"content.free_text", NULL};

#define TEST_DESCRIPTOR(NAME)                                                             \
    {                                                                                     \
        sizeof(sb_plugin_descriptor), SB_ABI_MAJOR, SB_ABI_MINOR, NAME, "1.0.0",          \
            "Switchboard tests", "Apache-2.0", "ABI test plugin", SB_KIND_SOURCE, 0,     \
            test_categories, test_fields, 1, test_create, test_destroy, NULL, NULL, NULL, \
            NULL, NULL, NULL, NULL                                                        \
    }

#endif
