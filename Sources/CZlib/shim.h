// zlib (Debian zlib1g-dev): inflate for the gzip-compressed IDX files.
#include <zlib.h>
