/* IDX reader (the MNIST file format), gzipped or plain: zlib's gzread passes
 * plain files through unchanged. */
#include "selfsup/data.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* A lying header may announce up to 2 GiB; the buffer only grows as bytes
 * actually arrive, so memory stays within ~2x of what the file holds. */
#define IDX_MAX_BYTES ((uint64_t)1 << 31)

static int read_exact(gzFile f, void *buf, unsigned len)
{
    unsigned got = 0;
    while (got < len) {
        int r = gzread(f, (char *)buf + got, len - got);
        if (r <= 0) break;
        got += (unsigned)r;
    }
    return (int)got;
}

int ssl_idx_read(const char *path, int *ndim, int dims[4], uint8_t **data, char *err)
{
    *data = NULL;
    gzFile f = gzopen(path, "rb");
    if (!f) return ssl_fail(err, SSL_EIO, "%s: cannot open", path);
    int rc = SSL_OK;
    uint8_t *buf = NULL;
    unsigned char hdr[4];
    if (read_exact(f, hdr, 4) != 4) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: truncated: no IDX header", path);
        goto done;
    }
    if (hdr[0] != 0 || hdr[1] != 0 || hdr[3] < 1 || hdr[3] > 4) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: bad magic 0x%02x%02x%02x%02x (not an IDX file)",
                      path, hdr[0], hdr[1], hdr[2], hdr[3]);
        goto done;
    }
    if (hdr[2] != 0x08) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: IDX type 0x%02x not supported (only 0x08, ubyte)",
                      path, hdr[2]);
        goto done;
    }
    int nd = hdr[3];
    unsigned char dbytes[16];
    if (read_exact(f, dbytes, (unsigned)(4 * nd)) != 4 * nd) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: truncated: IDX header ends inside the dims", path);
        goto done;
    }
    uint64_t total = 1;
    for (int i = 0; i < nd; i++) {
        const unsigned char *b = dbytes + 4 * i;
        uint64_t d = ((uint64_t)b[0] << 24) | ((uint64_t)b[1] << 16) | ((uint64_t)b[2] << 8) | b[3];
        if (d == 0 || d > IDX_MAX_BYTES) {
            rc = ssl_fail(err, SSL_EFORMAT, "%s: bad IDX dim %d = %llu", path, i,
                          (unsigned long long)d);
            goto done;
        }
        total *= d;
        if (total > IDX_MAX_BYTES) {
            rc = ssl_fail(err, SSL_EFORMAT, "%s: IDX header announces more than 2^31 bytes", path);
            goto done;
        }
        dims[i] = (int)d;
    }
    for (int i = nd; i < 4; i++) dims[i] = 1;
    const char *what = nd == 1 ? "labels" : "pixels";

    size_t cap = total < ((size_t)1 << 20) ? (size_t)total : ((size_t)1 << 20);
    size_t got = 0;
    buf = malloc(cap ? cap : 1);
    if (!buf) {
        rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    while (got < total) {
        if (got == cap) {
            size_t ncap = cap * 2 < total ? cap * 2 : (size_t)total;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
                goto done;
            }
            buf = nb;
            cap = ncap;
        }
        size_t want = cap - got;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(f, buf + got, (unsigned)want);
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            if (zerr == Z_BUF_ERROR) /* the gzip stream itself was cut short */
                rc = ssl_fail(err, SSL_EFORMAT,
                              "%s: truncated: expected %llu bytes of %s, got %zu (gzip stream ends early)",
                              path, (unsigned long long)total, what, got);
            else
                rc = ssl_fail(err, SSL_EFORMAT, "%s: corrupt compressed data after %zu bytes of %s (%s)",
                              path, got, what, msg ? msg : "?");
            goto done;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    if (got < total) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: truncated: expected %llu bytes of %s, got %zu", path,
                      (unsigned long long)total, what, got);
        goto done;
    }
    unsigned char extra[64];
    int r = gzread(f, extra, sizeof extra);
    if (r > 0) {
        rc = ssl_fail(err, SSL_EFORMAT,
                      "%s: trailing data: more than the %llu bytes of %s the header announces",
                      path, (unsigned long long)total, what);
        goto done;
    }
    if (r < 0) {
        int zerr;
        const char *msg = gzerror(f, &zerr);
        rc = ssl_fail(err, SSL_EFORMAT, "%s: corrupt compressed data at the end (%s)", path,
                      msg ? msg : "?");
        goto done;
    }
    *ndim = nd;
    *data = buf;
    buf = NULL;
done:
    free(buf);
    gzclose(f);
    return rc;
}
