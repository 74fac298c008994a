// C shim over libpng (Debian libpng-dev): libpng reports errors by longjmp, which Swift cannot
// catch, so decoding runs here behind setjmp and returns a status code and message.
#pragma once
#include <stddef.h>

/// Outcome of `senet_png_decode`.
typedef enum {
    SENET_PNG_OK = 0,
    SENET_PNG_CORRUPT = 1,    ///< libpng rejected the data (truncated, bad CRC, bad zlib stream, ...)
    SENET_PNG_TOO_LARGE = 2,  ///< width × height exceeds the caller's pixel limit
    SENET_PNG_NO_MEMORY = 3,  ///< the pixel buffer could not be allocated
} senet_png_status;

/// Decodes a whole PNG file held in memory to 8-bit interleaved RGB, as Pillow's
/// `Image.open(f).convert("RGB")`: 16-bit samples keep their high byte, palette and 1/2/4-bit gray
/// are expanded, gray is replicated to R, G and B, and alpha (or tRNS) is dropped.
///
/// On `SENET_PNG_OK`, `*pixels` holds `*width × *height × 3` bytes allocated with malloc (free
/// with `senet_png_free`). Otherwise `message` holds a one-line reason (NUL-terminated, truncated to
/// `message_capacity`) and `*pixels` is NULL. The whole file, up to IEND, must be present.
senet_png_status senet_png_decode(const unsigned char *data, size_t size, unsigned long long max_pixels,
                                  unsigned char **pixels, unsigned *width, unsigned *height,
                                  char *message, size_t message_capacity);

/// Frees a buffer returned by `senet_png_decode`.
void senet_png_free(unsigned char *pixels);
