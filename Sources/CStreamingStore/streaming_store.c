// The header's functions are inline; SwiftPM needs one source file per C target.
#include "streaming_store.h"
