// C shim over libpng (Debian libpng-dev): libpng reports errors by longjmp, which Swift cannot
// catch, so decoding runs here behind setjmp and returns a status code and message.
#pragma once
#include <stddef.h>
int senet_png_version(void);
