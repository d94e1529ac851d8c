/* An audio backend plugin in C: capture gives a ramp (0, 1, 2, ...), one frame per
 * read after the first (which reports DT_NOT_READY, as a real device might); render
 * remembers the last sample it was given and fails on the value -1. */
#include <stdlib.h>
#include <string.h>

#include "dialtone_plugin.h"

typedef struct { int16_t next; int reads; int16_t last; } stream;

static void *open_stream(const char *device, uint32_t rate, uint32_t channels, uint32_t frame_ms, dt_error *e) {
    (void)rate; (void)channels; (void)frame_ms;
    if (strcmp(device, "missing") == 0) {
        const char *msg = "no such device";
        e->code = DT_ERR_INVALID;
        e->message_len = (uint32_t)strlen(msg);
        memcpy(e->message, msg, strlen(msg));
        return NULL;
    }
    return calloc(1, sizeof(stream));
}

static int32_t read_frame(void *p, int16_t *out, size_t n, dt_error *e) {
    (void)e;
    stream *s = p;
    if (s->reads++ == 0) return DT_NOT_READY;
    for (size_t i = 0; i < n; i++) out[i] = s->next++;
    return DT_OK;
}

static int32_t write_frame(void *p, const int16_t *pcm, size_t n, dt_error *e) {
    stream *s = p;
    if (n > 0 && pcm[n - 1] == -1) {
        e->code = DT_ERR_INVALID;
        e->message_len = 0;
        return DT_ERR_INVALID;
    }
    if (n > 0) s->last = pcm[n - 1];
    return DT_OK;
}

static void close_stream(void *p) { free(p); }

static const dt_plugin_descriptor DESCRIPTOR = {
    .abi_version = DIALTONE_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(dt_plugin_descriptor),
    .kind = DT_KIND_AUDIO_BACKEND,
    .name = "x-ramp",
    .version = "1.0.0",
    .payload_type = -1,
    .audio = {.open_capture = open_stream,
              .read_frame = read_frame,
              .open_render = open_stream,
              .write_frame = write_frame,
              .close = close_stream},
};

const dt_plugin_descriptor *dialtone_plugin_descriptor(void) { return &DESCRIPTOR; }
