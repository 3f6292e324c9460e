/*
 * fault.c — the fault-injection seam (STYLE rule 29). Code that can fail in ways tests cannot
 * otherwise provoke (a full disk, an I/O error) asks mlr_fault_check() first; normally nothing
 * is installed and the answer is MLR_OK after one atomic load. A unit test installs its own
 * function with mlr_fault_set(); a black-box test arms the one in this file through the
 * environment (MLRELAY_FAULT_FILE), which is compiled only into test builds
 * (-DMLR_FAULT_INJECTION=ON, the default when tests are built).
 *
 * The environment seam fails every disk write while the named file exists, so a test can make
 * the disk "full" and "free" again while the server runs, without root or a small file system.
 * The file's first word picks the failure: "enospc" (the default) or "eio". Thread-safe: the
 * seam is read from any thread (the store writer, readers); it is installed before they start.
 */
#include "common.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Atomic(mlr_fault_fn) fault_fn;
static void *_Atomic fault_data;

void mlr_fault_set(mlr_fault_fn fn, void *data)
{
    atomic_store(&fault_data, data);
    atomic_store(&fault_fn, fn);
}

int mlr_fault_check(enum mlr_fault_point point)
{
    mlr_fault_fn fn = atomic_load(&fault_fn);
    return fn ? fn(point, atomic_load(&fault_data)) : MLR_OK;
}

#ifdef MLR_FAULT_INJECTION
/* The environment seam: @data is the path of the file whose presence arms it. */
static int env_fault(enum mlr_fault_point point, void *data)
{
    char word[16] = "";
    int fd = open((const char *)data, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return MLR_OK;
    ssize_t n = read(fd, word, sizeof(word) - 1);
    close(fd);
    int eio = n > 0 && strncmp(word, "eio", 3) == 0;
    if (point == MLR_FAULT_DISK_SYNC && !eio)
        return MLR_OK; /* a full disk still syncs what it already holds */
    return eio ? MLR_EIO : MLR_ENOSPC;
}
#endif

int mlr_fault_env_install(void)
{
#ifdef MLR_FAULT_INJECTION
    const char *path = getenv("MLRELAY_FAULT_FILE");
    if (path && *path) {
        mlr_fault_set(env_fault, mlr_xstrdup(path)); /* lives as long as the process */
        mlr_log(MLR_LOG_WARN, "fault", "fault injection armed by %s", path);
        return 1;
    }
#endif
    return 0;
}

int mlr_fault_enabled(void)
{
#ifdef MLR_FAULT_INJECTION
    return 1;
#else
    return 0;
#endif
}
