/* Atomic whole-file writes: the data goes to "<path>.tmp.<pid>", is flushed
 * to disk, then renamed over path. A crash or a failed write leaves either the
 * old file or the new one, never a partial one. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/core.h"
#include "selfsup/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* fsync of the directory makes the rename itself durable. Filesystems that
 * cannot sync a directory say EINVAL; that is not a failed write. */
static int sync_dir(const char *path, char *err)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 1;
    if (slash && n == 0) n = 1; /* "/file" lives in "/" */
    char *dir = malloc(n + 1);
    if (!dir) return ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
    memcpy(dir, slash ? path : ".", n);
    dir[n] = '\0';
    int rc = SSL_OK;
    int fd = open(dir, O_RDONLY);
    if (fd < 0) {
        rc = ssl_fail(err, SSL_EIO, "%s: cannot open directory to sync: %s", path, strerror(errno));
    } else {
        if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS)
            rc = ssl_fail(err, SSL_EIO, "%s: cannot sync directory: %s", path, strerror(errno));
        close(fd);
    }
    free(dir);
    return rc;
}

int ssl_write_file_atomic(const char *path, const void *const *parts,
                          const size_t *sizes, int n_parts, char *err)
{
    if (!path || !*path) return ssl_fail(err, SSL_EINVAL, "write: empty path");
    if (n_parts < 0 || (n_parts > 0 && (!parts || !sizes)))
        return ssl_fail(err, SSL_EINVAL, "%s: bad parts for write", path);
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) return ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());

    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int rc = ssl_fail(err, SSL_EIO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    const char *what = NULL;
    for (int i = 0; i < n_parts && !what; i++) {
        if (sizes[i] == 0) continue;
        if (!parts[i]) {
            errno = EINVAL;
            what = "write";
        } else if (fwrite(parts[i], 1, sizes[i], f) != sizes[i]) {
            what = "write";
        }
    }
    if (!what && fflush(f) != 0) what = "flush";
    if (!what && fsync(fileno(f)) != 0) what = "fsync";
    int saved = errno;
    if (fclose(f) != 0 && !what) { what = "close"; saved = errno; }
    if (!what && rename(tmp, path) != 0) { what = "rename"; saved = errno; }
    if (what) {
        unlink(tmp);
        int rc = ssl_fail(err, SSL_EIO, "%s: %s failed: %s", path, what, strerror(saved));
        free(tmp);
        return rc;
    }
    free(tmp);
    return sync_dir(path, err);
}
