/*
 * dialtone_plugin.h: the Dialtone plugin C ABI, version 1.
 *
 * A plugin is a shared library (.so, .dylib, .dll) that exports one function,
 *
 *     const dt_plugin_descriptor *dialtone_plugin_descriptor(void);
 *
 * returning a pointer to a descriptor that lives as long as the library. The
 * descriptor starts with the ABI version and its own size; the host reads the version
 * first and refuses a plugin of another version without reading further, then refuses
 * one whose struct_size is smaller than the descriptor it knows. Later minor versions
 * only append fields, so a larger struct_size is accepted.
 *
 * Only C types cross the boundary. Buffers are a pointer, a length and an explicit
 * capacity; a function that fills a buffer writes how much it wrote to *out_len and
 * never more than the capacity. Every function that can fail returns an int32_t
 * (DT_OK, or a negative DT_ERR_*) and may describe the failure in *error, which the
 * host owns and copies. A plugin must not let a C++ exception or a Rust panic cross
 * this boundary. Handles (encoders, decoders, streams) may be used from any thread,
 * one call at a time.
 */
#ifndef DIALTONE_PLUGIN_H
#define DIALTONE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DIALTONE_PLUGIN_ABI_VERSION 1u

#define DT_KIND_CODEC 1u
#define DT_KIND_AUDIO_BACKEND 2u

#define DT_OK 0
#define DT_NOT_READY 1      /* read_frame: no frame yet */
#define DT_ERR_INVALID (-1) /* bad input */
#define DT_ERR_PANIC (-2)   /* the plugin caught its own panic */
#define DT_ERR_INTERNAL (-3)
#define DT_ERR_BUFFER (-4)  /* a buffer is too small */

#define DT_ERROR_MESSAGE_MAX 256

/* A failure's description: the plugin writes up to DT_ERROR_MESSAGE_MAX bytes of
 * UTF-8 into message and their count into message_len. */
typedef struct dt_error {
    int32_t code;
    uint32_t message_len;
    char message[DT_ERROR_MESSAGE_MAX];
} dt_error;

typedef struct dt_encoder_settings {
    uint32_t bitrate;    /* bit/s; 0: the codec's default */
    uint32_t complexity; /* 0-10; 255: the codec's default */
    uint8_t fec;         /* in-band forward error correction on */
    uint8_t dtx;         /* discontinuous transmission on */
    uint8_t reserved[2];
} dt_encoder_settings;

/* An audio codec. PCM is interleaved int16 at sample_rate; pcm_len and out_len count
 * samples of all channels. */
typedef struct dt_codec_api {
    void *(*encoder_new)(const dt_encoder_settings *settings, dt_error *error);
    void (*encoder_free)(void *encoder);
    int32_t (*encode)(void *encoder, const int16_t *pcm, size_t pcm_len, uint8_t *out,
                      size_t out_capacity, size_t *out_len, dt_error *error);
    void *(*decoder_new)(dt_error *error);
    void (*decoder_free)(void *decoder);
    int32_t (*decode)(void *decoder, const uint8_t *payload, size_t payload_len, int16_t *out,
                      size_t out_capacity, size_t *out_len, dt_error *error);
    /* optional (NULL): conceal one lost packet */
    int32_t (*conceal)(void *decoder, int16_t *out, size_t out_capacity, size_t *out_len,
                       dt_error *error);
} dt_codec_api;

/* An audio backend. Frames are frame_ms long; read_frame returns DT_OK with a frame
 * written, or DT_NOT_READY. */
typedef struct dt_audio_backend_api {
    void *(*open_capture)(const char *device, uint32_t sample_rate, uint32_t channels,
                          uint32_t frame_ms, dt_error *error);
    int32_t (*read_frame)(void *capture, int16_t *out, size_t out_len, dt_error *error);
    void *(*open_render)(const char *device, uint32_t sample_rate, uint32_t channels,
                         uint32_t frame_ms, dt_error *error);
    int32_t (*write_frame)(void *render, const int16_t *pcm, size_t pcm_len, dt_error *error);
    void (*close)(void *stream);
} dt_audio_backend_api;

typedef struct dt_plugin_descriptor {
    uint32_t abi_version; /* DIALTONE_PLUGIN_ABI_VERSION */
    uint32_t struct_size; /* sizeof(dt_plugin_descriptor) as the plugin was built */
    uint32_t kind;        /* DT_KIND_CODEC or DT_KIND_AUDIO_BACKEND */
    uint32_t reserved;
    const char *name;     /* UTF-8, NUL-terminated; a codec's SDP encoding name */
    const char *version;  /* the plugin's own version, UTF-8, NUL-terminated */
    /* DT_KIND_CODEC */
    uint32_t sample_rate; /* PCM rate */
    uint32_t clock_rate;  /* RTP clock rate (8000 for G.722's 16 kHz audio) */
    uint32_t channels;
    uint32_t ptime_ms;
    int32_t payload_type; /* a static RTP payload type, or -1 */
    uint32_t reserved2;
    const char *fmtp;     /* SDP fmtp, or NULL */
    dt_codec_api codec;
    /* DT_KIND_AUDIO_BACKEND */
    dt_audio_backend_api audio;
} dt_plugin_descriptor;

const dt_plugin_descriptor *dialtone_plugin_descriptor(void);

#ifdef __cplusplus
}
#endif

#endif /* DIALTONE_PLUGIN_H */
