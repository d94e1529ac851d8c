/* A small codec plugin written in C against dialtone_plugin.h, to prove the ABI is C:
 * "X-DT-L16", 16-bit linear PCM in network byte order at 8 kHz (RFC 3551's L16, at a
 * rate of our own). Compile-time switches make the misbehaving variants the host must
 * refuse or contain:
 *   DT_TEST_ABI=n          claim ABI version n
 *   DT_TEST_STRUCT_SIZE=n  claim a descriptor of n bytes
 *   DT_TEST_NO_DECODE      leave the decode function out
 *   DT_TEST_GARBAGE        report more output than the buffer holds; fail decoder_new
 */
#include <stdlib.h>
#include <string.h>

#include "dialtone_plugin.h"

#ifndef DT_TEST_ABI
#define DT_TEST_ABI DIALTONE_PLUGIN_ABI_VERSION
#endif
#ifndef DT_TEST_STRUCT_SIZE
#define DT_TEST_STRUCT_SIZE sizeof(dt_plugin_descriptor)
#endif

typedef struct { int frames; } state;

static void set_error(dt_error *e, int32_t code, const char *msg) {
    if (!e) return;
    size_t n = strlen(msg);
    if (n > DT_ERROR_MESSAGE_MAX) n = DT_ERROR_MESSAGE_MAX;
    e->code = code;
    e->message_len = (uint32_t)n;
    memcpy(e->message, msg, n);
}

static void *encoder_new(const dt_encoder_settings *s, dt_error *e) {
    (void)s;
    (void)e;
    return calloc(1, sizeof(state));
}

static void codec_free(void *p) { free(p); }

static int32_t encode(void *enc, const int16_t *pcm, size_t n, uint8_t *out, size_t cap, size_t *out_len,
                      dt_error *e) {
    ((state *)enc)->frames++;
#ifdef DT_TEST_GARBAGE
    (void)pcm;
    (void)n;
    (void)out;
    (void)e;
    *out_len = cap + 1000; /* a lie the host must catch */
    return DT_OK;
#else
    if (cap < 2 * n) {
        set_error(e, DT_ERR_BUFFER, "the output buffer is too small");
        return DT_ERR_BUFFER;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t v = (uint16_t)pcm[i];
        out[2 * i] = (uint8_t)(v >> 8);
        out[2 * i + 1] = (uint8_t)(v & 0xFF);
    }
    *out_len = 2 * n;
    return DT_OK;
#endif
}

static void *decoder_new(dt_error *e) {
#ifdef DT_TEST_GARBAGE
    set_error(e, DT_ERR_INTERNAL, "out of mana");
    return NULL;
#else
    (void)e;
    return calloc(1, sizeof(state));
#endif
}

#ifndef DT_TEST_NO_DECODE
static int32_t decode(void *dec, const uint8_t *p, size_t n, int16_t *out, size_t cap, size_t *out_len,
                      dt_error *e) {
    (void)dec;
    if (n % 2 != 0) {
        set_error(e, DT_ERR_INVALID, "an L16 payload has an even length");
        return DT_ERR_INVALID;
    }
    if (cap < n / 2) {
        set_error(e, DT_ERR_BUFFER, "the output buffer is too small");
        return DT_ERR_BUFFER;
    }
    for (size_t i = 0; i < n / 2; i++) out[i] = (int16_t)((p[2 * i] << 8) | p[2 * i + 1]);
    *out_len = n / 2;
    return DT_OK;
}
#endif

static int32_t conceal(void *dec, int16_t *out, size_t cap, size_t *out_len, dt_error *e) {
    (void)dec;
    (void)e;
    size_t n = cap < 160 ? cap : 160;
    memset(out, 0, n * sizeof(int16_t));
    *out_len = n;
    return DT_OK;
}

static const dt_plugin_descriptor DESCRIPTOR = {
    .abi_version = DT_TEST_ABI,
    .struct_size = DT_TEST_STRUCT_SIZE,
    .kind = DT_KIND_CODEC,
    .name = "X-DT-L16",
    .version = "1.0.0",
    .sample_rate = 8000,
    .clock_rate = 8000,
    .channels = 1,
    .ptime_ms = 20,
    .payload_type = -1,
    .fmtp = NULL,
    .codec =
        {
            .encoder_new = encoder_new,
            .encoder_free = codec_free,
            .encode = encode,
            .decoder_new = decoder_new,
            .decoder_free = codec_free,
#ifndef DT_TEST_NO_DECODE
            .decode = decode,
#endif
            .conceal = conceal,
        },
};

const dt_plugin_descriptor *dialtone_plugin_descriptor(void) { return &DESCRIPTOR; }
