// libpng decoding behind setjmp. Every libpng call that can fail happens between `setjmp` and the
// end of `senet_png_decode`; an error longjmps back with the message saved in the context. The
// context lives on the heap and locals are not changed after `setjmp`, because locals changed
// in between have indeterminate values after longjmp.
#include "cpng.h"
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const unsigned char *data;
    size_t size, offset;
    char *message;
    size_t message_capacity;
    unsigned char *pixels;
    png_bytep *rows;
    senet_png_status status;
} decode_context;

static void set_message(decode_context *ctx, const char *text) {
    if (ctx->message_capacity == 0) return;
    snprintf(ctx->message, ctx->message_capacity, "%s", text);
}

static void on_error(png_structp png, png_const_charp text) {
    decode_context *ctx = png_get_error_ptr(png);
    set_message(ctx, text);
    png_longjmp(png, 1);
}

// Warnings (unknown sRGB profiles, CRC errors in ancillary chunks, ...) leave a usable image, as
// they do for Pillow, so they are not errors.
static void on_warning(png_structp png, png_const_charp text) {
    (void)png;
    (void)text;
}

static void read_bytes(png_structp png, png_bytep out, size_t count) {
    decode_context *ctx = png_get_io_ptr(png);
    if (count > ctx->size - ctx->offset) png_error(png, "file is truncated");
    memcpy(out, ctx->data + ctx->offset, count);
    ctx->offset += count;
}

senet_png_status senet_png_decode(const unsigned char *data, size_t size, unsigned long long max_pixels,
                                  unsigned char **pixels, unsigned *width, unsigned *height,
                                  char *message, size_t message_capacity) {
    *pixels = NULL;
    *width = 0;
    *height = 0;
    if (message_capacity > 0) message[0] = 0;
    decode_context *ctx = calloc(1, sizeof(decode_context));
    png_structp png = ctx ? png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, on_error, on_warning) : NULL;
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (info == NULL) {
        if (png) png_destroy_read_struct(&png, NULL, NULL);
        free(ctx);
        if (message_capacity > 0) snprintf(message, message_capacity, "cannot create the libpng decoder");
        return SENET_PNG_NO_MEMORY;
    }
    *ctx = (decode_context){data, size, 0, message, message_capacity, NULL, NULL, SENET_PNG_CORRUPT};
    if (setjmp(png_jmpbuf(png))) {
        senet_png_status status = ctx->status;
        free(ctx->pixels);
        free(ctx->rows);
        free(ctx);
        png_destroy_read_struct(&png, &info, NULL);
        return status;
    }
    png_set_read_fn(png, ctx, read_bytes);
    png_read_info(png, info);

    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if ((unsigned long long)w * h > max_pixels) {
        char text[160];
        snprintf(text, sizeof text, "%u x %u = %llu pixels exceeds the limit of %llu (decompression bomb?)",
                 (unsigned)w, (unsigned)h, (unsigned long long)w * h, max_pixels);
        ctx->status = SENET_PNG_TOO_LARGE;
        png_error(png, text);
    }
    int color_type = png_get_color_type(png, info), bit_depth = png_get_bit_depth(png, info);
    if (bit_depth == 16) png_set_strip_16(png);
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if ((color_type & PNG_COLOR_MASK_COLOR) == 0) {
        if (bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        png_set_gray_to_rgb(png);
    }
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8 ||
        png_get_rowbytes(png, info) != (size_t)w * 3) {
        png_error(png, "unexpected pixel layout after conversion to 8-bit RGB");
    }

    ctx->status = SENET_PNG_NO_MEMORY;
    ctx->pixels = malloc((size_t)w * h * 3);
    ctx->rows = malloc(sizeof(png_bytep) * h);
    if (ctx->pixels == NULL || ctx->rows == NULL) png_error(png, "out of memory for the pixel buffer");
    ctx->status = SENET_PNG_CORRUPT;
    for (png_uint_32 y = 0; y < h; y++) ctx->rows[y] = ctx->pixels + (size_t)y * w * 3;
    png_read_image(png, ctx->rows);
    png_read_end(png, NULL);

    free(ctx->rows);
    png_destroy_read_struct(&png, &info, NULL);
    *pixels = ctx->pixels;
    free(ctx);
    *width = w;
    *height = h;
    return SENET_PNG_OK;
}

void senet_png_free(unsigned char *pixels) { free(pixels); }
