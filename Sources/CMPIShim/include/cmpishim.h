// The MPI shim: Open MPI reached at run time with dlopen, so that the package builds and runs
// without Open MPI installed. Only `mpirun`-launched processes load it (see Distributed/MPI.swift).
//
// Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_ERRORS_RETURN, ...) are addresses of
// exported globals (ompi_mpi_comm_world, ompi_mpi_float, ...; see OMPI_PREDEFINED_GLOBAL in its
// mpi.h), so dlsym gives them exactly as the header's macros do. The ABI used here (handles are
// pointers, MPI_STATUS_IGNORE is NULL, MPI_SUCCESS is 0, MPI_THREAD_FUNNELED is 1) is that of
// Open MPI 4.x and 5.x, whose libmpi.so.40 this loads.
//
// Every function returns an MPI error code (0 = success) unless stated otherwise.

#ifndef SENET_CMPISHIM_H
#define SENET_CMPISHIM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Element types and reduction operators understood by the shim.
enum { SENET_MPI_FLOAT = 0, SENET_MPI_DOUBLE = 1, SENET_MPI_BYTE = 2 };
enum { SENET_MPI_SUM = 0, SENET_MPI_MAX = 1, SENET_MPI_MIN = 2 };

/// Loads `library` (NULL: "libmpi.so.40") with RTLD_NOW | RTLD_GLOBAL (Open MPI's plugins need
/// its symbols global) and resolves every function and handle used here. Returns 0, or -1 with
/// a message naming the library or the missing symbol in `error`.
int senet_mpi_load(const char *library, char *error, size_t error_size);

/// MPI_Init_thread(MPI_THREAD_FUNNELED); errors return (MPI_ERRORS_RETURN) instead of aborting
/// inside MPI; duplicates MPI_COMM_WORLD into `channels` private communicators (independent
/// streams of collectives, e.g. gradients and batch-norm statistics). Writes rank and size.
int senet_mpi_init(int channels, int *rank, int *size, char *error, size_t error_size);

/// MPI_Finalize (after freeing the private communicators). No-op if never initialised.
int senet_mpi_finalize(void);

/// MPI_Abort(MPI_COMM_WORLD, code): the launcher kills every rank of the job.
void senet_mpi_abort(int code);

/// Starts an in-place allreduce of `count` elements on private communicator `channel`.
int senet_mpi_iallreduce(void *buffer, int count, int type, int op, int channel, void **request);

/// Blocking in-place allreduce (MPI_Allreduce) on private communicator `channel`. It has no
/// deadline; the library's collectives use the non-blocking form (benchmarks compare the two).
int senet_mpi_allreduce(void *buffer, int count, int type, int op, int channel);

/// Starts a broadcast of `count` elements from `root` on private communicator `channel`.
int senet_mpi_ibcast(void *buffer, int count, int type, int root, int channel, void **request);

/// Starts a barrier on private communicator `channel`.
int senet_mpi_ibarrier(int channel, void **request);

/// MPI_Test: sets *done to 1 (and the request to MPI_REQUEST_NULL) once the operation completed.
int senet_mpi_test(void **request, int *done);

/// MPI_Wtime.
double senet_mpi_wtime(void);

/// The text of MPI error `code` (MPI_Error_string), or a generic line before loading.
void senet_mpi_error_string(int code, char *buffer, size_t size);

/// MPI_Get_library_version, or an empty string.
void senet_mpi_library_version(char *buffer, size_t size);

/// omp_set_num_threads(n) when an OpenMP runtime is loaded in the process (oneDNN's libgomp);
/// returns 1 if it was found, 0 otherwise.
int senet_openmp_set_threads(int n);

#ifdef __cplusplus
}
#endif

#endif
