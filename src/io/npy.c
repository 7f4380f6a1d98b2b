/* NumPy .npy files (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
 *   "\x93NUMPY" | major | minor | header length (u16 LE in 1.0, u32 LE in 2.0/3.0)
 *   | Python dict literal {'descr':..., 'fortran_order':..., 'shape':(...)} | data
 * We write 1.0 with the header padded to 64 bytes; we read 1.0-3.0, F32 only. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/core.h"
#include "selfsup/io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Real headers are ~100 bytes; anything near this is not an embedding file. */
#define NPY_MAX_HEADER (1u << 16)

static const char *npy_descr(ssl_dtype dt)
{
    switch (dt) {
    case SSL_DT_F32: return "<f4";
    case SSL_DT_F64: return "<f8";
    case SSL_DT_I64: return "<i8";
    case SSL_DT_I32: return "<i4";
    case SSL_DT_U8: return "|u1";
    }
    return NULL;
}

int ssl_npy_write(const char *path, ssl_dtype dt, int ndim, const int64_t *shape,
                  const void *data, char *err)
{
    const char *descr = npy_descr(dt);
    if (!descr) return ssl_fail(err, SSL_EINVAL, "%s: unsupported dtype %d for .npy", path, (int)dt);
    if (ndim < 0 || ndim > SSL_ST_MAX_DIMS || (ndim > 0 && !shape))
        return ssl_fail(err, SSL_EINVAL, "%s: bad ndim %d for .npy", path, ndim);
    char h[512];
    int n = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    size_t nbytes = ssl_dtype_size(dt);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return ssl_fail(err, SSL_EINVAL, "%s: negative dim in .npy shape", path);
        if (shape[d] > 0 && nbytes > SIZE_MAX / (uint64_t)shape[d])
            return ssl_fail(err, SSL_EINVAL, "%s: .npy array too large", path);
        nbytes *= (size_t)shape[d];
        n += snprintf(h + n, sizeof h - (size_t)n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    }
    n += snprintf(h + n, sizeof h - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    if (nbytes > 0 && !data) return ssl_fail(err, SSL_EINVAL, "%s: NULL data", path);
    /* 10-byte preamble + dict + spaces + '\n' must be a multiple of 64. */
    size_t total = ((size_t)10 + (size_t)n + 1 + 63) / 64 * 64;
    size_t hlen = total - 10;
    unsigned char head[512 + 64];
    if (total > sizeof head) return ssl_fail(err, SSL_EINVAL, "%s: .npy header too long", path);
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (unsigned char)(hlen & 0xFF);
    head[9] = (unsigned char)(hlen >> 8);
    memcpy(head + 10, h, (size_t)n);
    memset(head + 10 + n, ' ', hlen - (size_t)n - 1);
    head[total - 1] = '\n';
    const void *parts[2] = { head, data };
    size_t sizes[2] = { total, nbytes };
    return ssl_write_file_atomic(path, parts, sizes, 2, err);
}

/* ------------------------------------------------- header dict reader */

typedef struct lexer {
    const char *s;
    size_t len, pos;
} lexer;

static void lx_ws(lexer *x)
{
    while (x->pos < x->len && (x->s[x->pos] == ' ' || x->s[x->pos] == '\t' ||
                               x->s[x->pos] == '\n' || x->s[x->pos] == '\r'))
        x->pos++;
}

static int lx_char(lexer *x, char c)
{
    lx_ws(x);
    if (x->pos < x->len && x->s[x->pos] == c) { x->pos++; return 1; }
    return 0;
}

/* A quoted Python string without escapes, copied into out (cap bytes). */
static int lx_str(lexer *x, char *out, size_t cap)
{
    lx_ws(x);
    if (x->pos >= x->len || (x->s[x->pos] != '\'' && x->s[x->pos] != '"')) return 0;
    char q = x->s[x->pos++];
    size_t n = 0;
    while (x->pos < x->len && x->s[x->pos] != q) {
        if (x->s[x->pos] == '\\' || n + 1 >= cap) return 0;
        out[n++] = x->s[x->pos++];
    }
    if (x->pos >= x->len) return 0;
    x->pos++;
    out[n] = '\0';
    return 1;
}

static int lx_word(lexer *x, const char *w)
{
    lx_ws(x);
    size_t n = strlen(w);
    if (x->len - x->pos < n || memcmp(x->s + x->pos, w, n) != 0) return 0;
    x->pos += n;
    return 1;
}

/* Parses the header dict; fills descr, fortran and shape. 0 on bad syntax. */
static int parse_dict(lexer *x, char *descr, size_t dcap, int *fortran, int *ndim,
                      int64_t *shape, int *seen)
{
    if (!lx_char(x, '{')) return 0;
    for (;;) {
        char key[32];
        if (lx_char(x, '}')) return 1;
        if (!lx_str(x, key, sizeof key) || !lx_char(x, ':')) return 0;
        if (strcmp(key, "descr") == 0) {
            if (!lx_str(x, descr, dcap)) return 0;
            *seen |= 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (lx_word(x, "False")) *fortran = 0;
            else if (lx_word(x, "True")) *fortran = 1;
            else return 0;
            *seen |= 2;
        } else if (strcmp(key, "shape") == 0) {
            if (!lx_char(x, '(')) return 0;
            *ndim = 0;
            while (!lx_char(x, ')')) {
                lx_ws(x);
                if (x->pos >= x->len || x->s[x->pos] < '0' || x->s[x->pos] > '9') return 0;
                if (*ndim >= SSL_ST_MAX_DIMS) return 0;
                int64_t v = 0;
                while (x->pos < x->len && x->s[x->pos] >= '0' && x->s[x->pos] <= '9') {
                    if (v > (INT64_MAX - 9) / 10) return 0;
                    v = v * 10 + (x->s[x->pos++] - '0');
                }
                shape[(*ndim)++] = v;
                if (!lx_char(x, ',')) {
                    if (!lx_char(x, ')')) return 0;
                    break;
                }
            }
            *seen |= 4;
        } else {
            return 0;
        }
        if (!lx_char(x, ',')) return lx_char(x, '}');
    }
}

int ssl_npy_read_f32(const char *path, int *ndim, int64_t *shape, float **data, char *err)
{
    *data = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ssl_fail(err, SSL_EIO, "%s: cannot open: %s", path, strerror(errno));
    int rc = SSL_OK;
    char *h = NULL;
    struct stat st;
    unsigned char pre[12];
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = ssl_fail(err, SSL_EIO, "%s: not a readable regular file", path);
        goto out;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    if (fsize < 10 || fread(pre, 1, 10, fp) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: not a .npy file (bad magic or too short)", path);
        goto out;
    }
    uint64_t hlen, hstart;
    if (pre[6] == 1) {
        hlen = (uint64_t)pre[8] | ((uint64_t)pre[9] << 8);
        hstart = 10;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, fp) != 2) {
            rc = ssl_fail(err, SSL_EFORMAT, "%s: truncated .npy preamble", path);
            goto out;
        }
        hlen = (uint64_t)pre[8] | ((uint64_t)pre[9] << 8) | ((uint64_t)pre[10] << 16) |
               ((uint64_t)pre[11] << 24);
        hstart = 12;
    } else {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: unsupported .npy version %d.%d", path, pre[6], pre[7]);
        goto out;
    }
    if (hlen > NPY_MAX_HEADER || hstart + hlen > fsize) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: .npy header length %llu exceeds the %llu-byte file",
                      path, (unsigned long long)hlen, (unsigned long long)fsize);
        goto out;
    }
    h = malloc((size_t)hlen + 1);
    if (!h || fread(h, 1, (size_t)hlen, fp) != hlen) {
        rc = ssl_fail(err, SSL_EIO, "%s: cannot read .npy header", path);
        goto out;
    }
    char descr[16];
    int fortran = 0, nd = 0, seen = 0;
    int64_t shp[SSL_ST_MAX_DIMS];
    lexer x = { h, (size_t)hlen, 0 };
    if (!parse_dict(&x, descr, sizeof descr, &fortran, &nd, shp, &seen) || seen != 7) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: cannot parse .npy header dict", path);
        goto out;
    }
    if (strcmp(descr, "<f4") != 0) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: .npy dtype is '%s', expected '<f4'", path, descr);
        goto out;
    }
    if (fortran) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: Fortran-order .npy is not supported", path);
        goto out;
    }
    uint64_t avail = fsize - hstart - hlen, need = 4;
    for (int d = 0; d < nd; d++) {
        uint64_t v = (uint64_t)shp[d];
        if (v == 0) { need = 0; break; }
        if (need > avail / v) { need = avail + 1; break; } /* already too big: stop before overflow */
        need *= v;
    }
    if (need > avail) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: .npy shape needs more than the %llu data bytes "
                      "present (truncated file?)", path, (unsigned long long)avail);
        goto out;
    }
    if (need < avail) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: .npy has %llu data bytes but its shape needs %llu",
                      path, (unsigned long long)avail, (unsigned long long)need);
        goto out;
    }
    *data = ssl_malloc((size_t)need);
    if (!*data) {
        rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if (fread(*data, 1, (size_t)need, fp) != need) {
        rc = ssl_fail(err, SSL_EIO, "%s: short read of .npy data", path);
        goto out;
    }
    *ndim = nd;
    for (int d = 0; d < nd; d++) shape[d] = shp[d];
out:
    if (rc != SSL_OK) {
        ssl_free(*data);
        *data = NULL;
    }
    free(h);
    fclose(fp);
    return rc;
}
