// The MPI shim (see include/cmpishim.h): Open MPI through dlopen/dlsym, no MPI header needed at
// build time. The types below mirror Open MPI's mpi.h: every handle is a pointer to an opaque
// struct, and the predefined handles are the addresses of exported globals.

#define _GNU_SOURCE
#include "cmpishim.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef void *mpi_handle;  // MPI_Comm, MPI_Datatype, MPI_Op, MPI_Errhandler, MPI_Request

enum { MPI_THREAD_FUNNELED_ = 1, MAX_CHANNELS = 4, MPI_MAX_ERROR_STRING_ = 256, MPI_MAX_LIBRARY_VERSION_STRING_ = 256 };

static struct {
    void *library;
    int (*Initialized)(int *);
    int (*Init_thread)(int *, char ***, int, int *);
    int (*Finalized)(int *);
    int (*Finalize)(void);
    int (*Abort)(mpi_handle, int);
    int (*Comm_rank)(mpi_handle, int *);
    int (*Comm_size)(mpi_handle, int *);
    int (*Comm_dup)(mpi_handle, mpi_handle *);
    int (*Comm_free)(mpi_handle *);
    int (*Comm_set_errhandler)(mpi_handle, mpi_handle);
    int (*Allreduce)(const void *, void *, int, mpi_handle, mpi_handle, mpi_handle);
    int (*Iallreduce)(const void *, void *, int, mpi_handle, mpi_handle, mpi_handle, mpi_handle *);
    int (*Ibcast)(void *, int, mpi_handle, int, mpi_handle, mpi_handle *);
    int (*Ibarrier)(mpi_handle, mpi_handle *);
    int (*Test)(mpi_handle *, int *, void *);
    double (*Wtime)(void);
    int (*Error_string)(int, char *, int *);
    int (*Get_library_version)(char *, int *);
    mpi_handle comm_world, errors_return, in_place;
    mpi_handle types[3];
    mpi_handle ops[3];
    mpi_handle channels[MAX_CHANNELS];
    int channel_count;
    int initialised;
} mpi;

static void message(char *error, size_t size, const char *format, const char *a, const char *b) {
    if (error && size) snprintf(error, size, format, a, b);
}

int senet_mpi_load(const char *library, char *error, size_t error_size) {
    if (mpi.library) return 0;
    const char *name = library && *library ? library : "libmpi.so.40";
    void *h = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        const char *why = dlerror();
        message(error, error_size, "cannot load %s (%s)", name, why ? why : "dlopen failed");
        return -1;
    }
    struct { void **slot; const char *symbol; } table[] = {
        {(void **)&mpi.Initialized, "MPI_Initialized"},
        {(void **)&mpi.Init_thread, "MPI_Init_thread"},
        {(void **)&mpi.Finalized, "MPI_Finalized"},
        {(void **)&mpi.Finalize, "MPI_Finalize"},
        {(void **)&mpi.Abort, "MPI_Abort"},
        {(void **)&mpi.Comm_rank, "MPI_Comm_rank"},
        {(void **)&mpi.Comm_size, "MPI_Comm_size"},
        {(void **)&mpi.Comm_dup, "MPI_Comm_dup"},
        {(void **)&mpi.Comm_free, "MPI_Comm_free"},
        {(void **)&mpi.Comm_set_errhandler, "MPI_Comm_set_errhandler"},
        {(void **)&mpi.Allreduce, "MPI_Allreduce"},
        {(void **)&mpi.Iallreduce, "MPI_Iallreduce"},
        {(void **)&mpi.Ibcast, "MPI_Ibcast"},
        {(void **)&mpi.Ibarrier, "MPI_Ibarrier"},
        {(void **)&mpi.Test, "MPI_Test"},
        {(void **)&mpi.Wtime, "MPI_Wtime"},
        {(void **)&mpi.Error_string, "MPI_Error_string"},
        {(void **)&mpi.Get_library_version, "MPI_Get_library_version"},
        // Predefined handles: the addresses of Open MPI's globals.
        {&mpi.comm_world, "ompi_mpi_comm_world"},
        {&mpi.errors_return, "ompi_mpi_errors_return"},
        {&mpi.types[SENET_MPI_FLOAT], "ompi_mpi_float"},
        {&mpi.types[SENET_MPI_DOUBLE], "ompi_mpi_double"},
        {&mpi.types[SENET_MPI_BYTE], "ompi_mpi_byte"},
        {&mpi.ops[SENET_MPI_SUM], "ompi_mpi_op_sum"},
        {&mpi.ops[SENET_MPI_MAX], "ompi_mpi_op_max"},
        {&mpi.ops[SENET_MPI_MIN], "ompi_mpi_op_min"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        dlerror();
        void *p = dlsym(h, table[i].symbol);
        if (!p) {
            message(error, error_size, "%s has no symbol %s (is it Open MPI 4 or 5?)", name, table[i].symbol);
            dlclose(h);
            memset(&mpi, 0, sizeof mpi);
            return -1;
        }
        *table[i].slot = p;
    }
    mpi.in_place = (mpi_handle)1;  // MPI_IN_PLACE in Open MPI's mpi.h
    mpi.library = h;
    return 0;
}

static void describe(int code, const char *what, char *error, size_t error_size) {
    char text[MPI_MAX_ERROR_STRING_ + 1];
    senet_mpi_error_string(code, text, sizeof text);
    message(error, error_size, "%s failed: %s", what, text);
}

int senet_mpi_init(int channels, int *rank, int *size, char *error, size_t error_size) {
    if (!mpi.library) { message(error, error_size, "%s%s", "the MPI library is not loaded", ""); return -1; }
    if (channels < 1 || channels > MAX_CHANNELS) { message(error, error_size, "%s%s", "bad channel count", ""); return -1; }
    int done = 0, provided = 0, rc;
    mpi.Initialized(&done);
    if (!done && (rc = mpi.Init_thread(NULL, NULL, MPI_THREAD_FUNNELED_, &provided)) != 0) {
        describe(rc, "MPI_Init_thread", error, error_size);
        return rc;
    }
    mpi.initialised = 1;
    // Errors come back as codes (the caller names them and aborts the job) rather than MPI's
    // default MPI_ERRORS_ARE_FATAL, which aborts from inside the library with a generic message.
    if ((rc = mpi.Comm_set_errhandler(mpi.comm_world, mpi.errors_return)) != 0) {
        describe(rc, "MPI_Comm_set_errhandler", error, error_size);
        return rc;
    }
    for (int i = mpi.channel_count; i < channels; i++) {
        if ((rc = mpi.Comm_dup(mpi.comm_world, &mpi.channels[i])) != 0) {  // inherits the error handler
            describe(rc, "MPI_Comm_dup", error, error_size);
            return rc;
        }
        mpi.channel_count = i + 1;
    }
    if ((rc = mpi.Comm_rank(mpi.comm_world, rank)) != 0) { describe(rc, "MPI_Comm_rank", error, error_size); return rc; }
    if ((rc = mpi.Comm_size(mpi.comm_world, size)) != 0) { describe(rc, "MPI_Comm_size", error, error_size); return rc; }
    return 0;
}

int senet_mpi_finalize(void) {
    if (!mpi.initialised) return 0;
    int finalized = 0;
    mpi.Finalized(&finalized);
    if (finalized) return 0;
    for (int i = 0; i < mpi.channel_count; i++) mpi.Comm_free(&mpi.channels[i]);
    mpi.channel_count = 0;
    mpi.initialised = 0;
    return mpi.Finalize();
}

void senet_mpi_abort(int code) {
    if (mpi.initialised) mpi.Abort(mpi.comm_world, code);
}

static int check_channel(int channel) {
    return mpi.initialised && channel >= 0 && channel < mpi.channel_count;
}

static const int SHIM_BAD_ARGUMENT = 13;  // MPI_ERR_ARG in Open MPI

int senet_mpi_iallreduce(void *buffer, int count, int type, int op, int channel, void **request) {
    if (!check_channel(channel) || type < 0 || type > 2 || op < 0 || op > 2) return SHIM_BAD_ARGUMENT;
    return mpi.Iallreduce(mpi.in_place, buffer, count, mpi.types[type], mpi.ops[op], mpi.channels[channel], request);
}

int senet_mpi_allreduce(void *buffer, int count, int type, int op, int channel) {
    if (!check_channel(channel) || type < 0 || type > 2 || op < 0 || op > 2) return SHIM_BAD_ARGUMENT;
    return mpi.Allreduce(mpi.in_place, buffer, count, mpi.types[type], mpi.ops[op], mpi.channels[channel]);
}

int senet_mpi_ibcast(void *buffer, int count, int type, int root, int channel, void **request) {
    if (!check_channel(channel) || type < 0 || type > 2) return SHIM_BAD_ARGUMENT;
    return mpi.Ibcast(buffer, count, mpi.types[type], root, mpi.channels[channel], request);
}

int senet_mpi_ibarrier(int channel, void **request) {
    if (!check_channel(channel)) return SHIM_BAD_ARGUMENT;
    return mpi.Ibarrier(mpi.channels[channel], request);
}

int senet_mpi_test(void **request, int *done) {
    if (!mpi.initialised) return SHIM_BAD_ARGUMENT;
    return mpi.Test(request, done, NULL);  // MPI_STATUS_IGNORE is NULL in Open MPI
}

double senet_mpi_wtime(void) { return mpi.library ? mpi.Wtime() : 0; }

void senet_mpi_error_string(int code, char *buffer, size_t size) {
    if (!buffer || !size) return;
    char text[MPI_MAX_ERROR_STRING_ + 1] = {0};
    int length = 0;
    if (mpi.library && mpi.Error_string(code, text, &length) == 0) {
        snprintf(buffer, size, "%.*s (MPI error %d)", length, text, code);
    } else {
        snprintf(buffer, size, "MPI error %d", code);
    }
}

void senet_mpi_library_version(char *buffer, size_t size) {
    if (!buffer || !size) return;
    buffer[0] = 0;
    char text[MPI_MAX_LIBRARY_VERSION_STRING_ + 1] = {0};
    int length = 0;
    if (mpi.library && mpi.Get_library_version(text, &length) == 0) snprintf(buffer, size, "%.*s", length, text);
}

int senet_openmp_set_threads(int n) {
    void (*set)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (!set) return 0;
    set(n);
    return 1;
}
