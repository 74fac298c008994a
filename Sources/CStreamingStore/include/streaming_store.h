// Non-temporal (streaming) stores for the project's memory-bound kernels. Swift has no spelling
// for them; these inline functions are compiled into the calling Swift module and inlined there.
// A streaming store writes a whole cache line to memory without first reading it (a plain store
// reads the line it is about to overwrite), so a pass that writes a large fresh buffer moves a
// third to a quarter less data. Stores must be 32-byte aligned; `senet_store_fence` orders them
// before the data is handed to another thread.
#ifndef SENET_STREAMING_STORE_H
#define SENET_STREAMING_STORE_H

typedef float senet_float8 __attribute__((ext_vector_type(8)));

static inline __attribute__((always_inline)) void senet_stream8(float *p, senet_float8 v) {
    __builtin_nontemporal_store(v, (senet_float8 *)p);
}

static inline __attribute__((always_inline)) void senet_store_fence(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_sfence();
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

#endif
