#include "cpng.h"
#include <png.h>
int senet_png_version(void) { return (int)png_access_version_number(); }
