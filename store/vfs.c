/*
 * vfs.c — a SQLite VFS shim that lets tests make the disk fail (STYLE rule 29).
 *
 * In test builds (MLR_FAULT_INJECTION) every connection the store opens goes through the VFS
 * "mlr-fault", which wraps the default one and forwards every call, except that writes and
 * truncates first ask mlr_fault_check(MLR_FAULT_DISK_WRITE) and syncs ask MLR_FAULT_DISK_SYNC:
 * an injected MLR_ENOSPC becomes SQLITE_FULL and MLR_EIO an SQLITE_IOERR_* code, exactly what
 * SQLite would see from a full or failing disk. In other builds store__vfs_name() is NULL and
 * SQLite's default VFS is used directly.
 *
 * Cost: one indirect call and one atomic load per file operation. Threading: the shim has no
 * state of its own beyond the wrapped VFS pointer, set once (pthread_once) before first use.
 */
#include "store_int.h"

#include <pthread.h>
#include <string.h>

#ifdef MLR_FAULT_INJECTION

/* Our file: the wrapped VFS's file follows it in the same allocation (szOsFile is the sum). */
struct fault_file {
    sqlite3_file base;    /* pMethods = &fault_io_methods */
    sqlite3_file *real;   /* points just past this struct */
};

static sqlite3_vfs *real_vfs;
static sqlite3_vfs fault_vfs;

static int injected(enum mlr_fault_point point, int ioerr)
{
    int rc = mlr_fault_check(point);
    if (rc == MLR_OK)
        return SQLITE_OK;
    return rc == MLR_ENOSPC ? SQLITE_FULL : ioerr;
}

static sqlite3_file *real_of(sqlite3_file *f)
{
    return ((struct fault_file *)f)->real;
}

static int f_close(sqlite3_file *f)
{
    return real_of(f)->pMethods->xClose(real_of(f));
}

static int f_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return real_of(f)->pMethods->xRead(real_of(f), buf, n, off);
}

static int f_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    int rc = injected(MLR_FAULT_DISK_WRITE, SQLITE_IOERR_WRITE);
    return rc != SQLITE_OK ? rc : real_of(f)->pMethods->xWrite(real_of(f), buf, n, off);
}

static int f_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    int rc = injected(MLR_FAULT_DISK_WRITE, SQLITE_IOERR_TRUNCATE);
    return rc != SQLITE_OK ? rc : real_of(f)->pMethods->xTruncate(real_of(f), size);
}

static int f_sync(sqlite3_file *f, int flags)
{
    int rc = injected(MLR_FAULT_DISK_SYNC, SQLITE_IOERR_FSYNC);
    return rc != SQLITE_OK ? rc : real_of(f)->pMethods->xSync(real_of(f), flags);
}

static int f_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return real_of(f)->pMethods->xFileSize(real_of(f), size);
}

static int f_lock(sqlite3_file *f, int level)
{
    return real_of(f)->pMethods->xLock(real_of(f), level);
}

static int f_unlock(sqlite3_file *f, int level)
{
    return real_of(f)->pMethods->xUnlock(real_of(f), level);
}

static int f_check_reserved(sqlite3_file *f, int *out)
{
    return real_of(f)->pMethods->xCheckReservedLock(real_of(f), out);
}

static int f_control(sqlite3_file *f, int op, void *arg)
{
    return real_of(f)->pMethods->xFileControl(real_of(f), op, arg);
}

static int f_sector(sqlite3_file *f)
{
    return real_of(f)->pMethods->xSectorSize(real_of(f));
}

static int f_caps(sqlite3_file *f)
{
    return real_of(f)->pMethods->xDeviceCharacteristics(real_of(f));
}

static int f_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
    return real_of(f)->pMethods->xShmMap(real_of(f), pg, pgsz, extend, pp);
}

static int f_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return real_of(f)->pMethods->xShmLock(real_of(f), offset, n, flags);
}

static void f_shm_barrier(sqlite3_file *f)
{
    real_of(f)->pMethods->xShmBarrier(real_of(f));
}

static int f_shm_unmap(sqlite3_file *f, int del)
{
    return real_of(f)->pMethods->xShmUnmap(real_of(f), del);
}

/* No memory-mapped I/O through the shim: mmap writes would bypass f_write. */
static int f_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    UNUSED(f);
    UNUSED(off);
    UNUSED(n);
    *pp = NULL;
    return SQLITE_OK;
}

static int f_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    UNUSED(f);
    UNUSED(off);
    UNUSED(p);
    return SQLITE_OK;
}

static const sqlite3_io_methods fault_io = {
    3,           f_close,     f_read,    f_write,           f_truncate,   f_sync,
    f_size,      f_lock,      f_unlock,  f_check_reserved,  f_control,    f_sector,
    f_caps,      f_shm_map,   f_shm_lock, f_shm_barrier,    f_shm_unmap,  f_fetch,
    f_unfetch,
};

static int v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    UNUSED(vfs);
    struct fault_file *ff = (struct fault_file *)f;
    ff->real = (sqlite3_file *)(ff + 1);
    int rc = real_vfs->xOpen(real_vfs, name, ff->real, flags, out_flags);
    /* SQLite calls xClose only when pMethods is set, i.e. when the real open set its own. */
    ff->base.pMethods = ff->real->pMethods ? &fault_io : NULL;
    return rc;
}

static int v_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    UNUSED(vfs);
    return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int v_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    UNUSED(vfs);
    return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int v_full(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    UNUSED(vfs);
    return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *v_dlopen(sqlite3_vfs *vfs, const char *name)
{
    UNUSED(vfs);
    return real_vfs->xDlOpen(real_vfs, name);
}

static void v_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
    UNUSED(vfs);
    real_vfs->xDlError(real_vfs, n, msg);
}

static void (*v_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
    UNUSED(vfs);
    return real_vfs->xDlSym(real_vfs, h, sym);
}

static void v_dlclose(sqlite3_vfs *vfs, void *h)
{
    UNUSED(vfs);
    real_vfs->xDlClose(real_vfs, h);
}

static int v_random(sqlite3_vfs *vfs, int n, char *out)
{
    UNUSED(vfs);
    return real_vfs->xRandomness(real_vfs, n, out);
}

static int v_sleep(sqlite3_vfs *vfs, int us)
{
    UNUSED(vfs);
    return real_vfs->xSleep(real_vfs, us);
}

static int v_time(sqlite3_vfs *vfs, double *out)
{
    UNUSED(vfs);
    return real_vfs->xCurrentTime(real_vfs, out);
}

static int v_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    UNUSED(vfs);
    return real_vfs->xGetLastError(real_vfs, n, out);
}

static int v_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    UNUSED(vfs);
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

static void register_vfs(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    if (real_vfs == NULL)
        return;
    fault_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(struct fault_file) + real_vfs->szOsFile,
        .mxPathname = real_vfs->mxPathname,
        .zName = "mlr-fault",
        .xOpen = v_open,
        .xDelete = v_delete,
        .xAccess = v_access,
        .xFullPathname = v_full,
        .xDlOpen = v_dlopen,
        .xDlError = v_dlerror,
        .xDlSym = v_dlsym,
        .xDlClose = v_dlclose,
        .xRandomness = v_random,
        .xSleep = v_sleep,
        .xCurrentTime = v_time,
        .xGetLastError = v_last_error,
        .xCurrentTimeInt64 = v_time64,
    };
    if (sqlite3_vfs_register(&fault_vfs, 0) != SQLITE_OK)
        real_vfs = NULL;
    else
        mlr_fault_env_install();
}

const char *store__vfs_name(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_vfs);
    return real_vfs ? "mlr-fault" : NULL;
}

#else

const char *store__vfs_name(void)
{
    return NULL;
}

#endif
