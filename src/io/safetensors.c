/* safetensors reader and writer (https://github.com/huggingface/safetensors):
 *   u64 little-endian N | N bytes of JSON header | data section
 * The header maps tensor names to {dtype, shape, data_offsets:[begin,end]}
 * (offsets relative to the data section) plus an optional "__metadata__"
 * string-to-string object. Every number in the header is checked against the
 * real file size before anything is allocated from it. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/core.h"
#include "selfsup/io.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

/* The reference implementation refuses headers above 100 MB too. */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

static const char *const dtype_names[] = { "F32", "F64", "I64", "I32", "U8" };
static const size_t dtype_sizes[] = { 4, 8, 8, 4, 1 };
#define N_DTYPES ((int)(sizeof dtype_sizes / sizeof dtype_sizes[0]))

size_t ssl_dtype_size(ssl_dtype dt)
{
    return ((int)dt >= 0 && (int)dt < N_DTYPES) ? dtype_sizes[dt] : 0;
}

const char *ssl_dtype_name(ssl_dtype dt)
{
    return ((int)dt >= 0 && (int)dt < N_DTYPES) ? dtype_names[dt] : "?";
}

static int dtype_parse(const char *s, ssl_dtype *dt)
{
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(s, dtype_names[i]) == 0) { *dt = (ssl_dtype)i; return 1; }
    return 0;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* A JSON number that is an exact non-negative integer no larger than 2^53
 * (the largest a double holds exactly). */
static int json_u64(const ssl_json *j, uint64_t *out)
{
    if (!j || j->type != SSL_JSON_NUMBER) return 0;
    double v = j->num;
    if (!(v >= 0 && v <= 9007199254740992.0) || floor(v) != v) return 0;
    *out = (uint64_t)v;
    return 1;
}

/* ---------------------------------------------------------------- reader */

typedef struct span {
    uint64_t begin, end;
    int idx;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

static int cmp_name(const void *a, const void *b)
{
    const ssl_st_entry *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Fills e from one header member; begin/end are data-section offsets. */
static int parse_entry(ssl_st_entry *e, span *sp, const ssl_json *m, uint64_t data_size,
                       const char *path, char *err)
{
    const char *nm = m->key;
    if (m->type != SSL_JSON_OBJECT)
        return ssl_fail(err, SSL_EFORMAT, "%s: tensor '%s' is not a JSON object", path, nm);
    const ssl_json *dt = ssl_json_get(m, "dtype");
    const ssl_json *sh = ssl_json_get(m, "shape");
    const ssl_json *of = ssl_json_get(m, "data_offsets");
    if (!dt || dt->type != SSL_JSON_STRING)
        return ssl_fail(err, SSL_EFORMAT, "%s: tensor '%s' has no dtype string", path, nm);
    if (!dtype_parse(dt->str, &e->dtype))
        return ssl_fail(err, SSL_EFORMAT, "%s: tensor '%s' has unsupported dtype '%s'", path, nm,
                        dt->str);
    if (!sh || sh->type != SSL_JSON_ARRAY)
        return ssl_fail(err, SSL_EFORMAT, "%s: tensor '%s' has no shape array", path, nm);
    if (sh->n > SSL_ST_MAX_DIMS)
        return ssl_fail(err, SSL_EFORMAT, "%s: tensor '%s' has %d dims (max %d)", path, nm, sh->n,
                        SSL_ST_MAX_DIMS);
    /* The product is bounded by data_size at every step, so it cannot overflow. */
    uint64_t numel = 1;
    int zero = 0;
    e->ndim = sh->n;
    for (int d = 0; d < sh->n; d++) {
        uint64_t v;
        if (!json_u64(&sh->items[d], &v))
            return ssl_fail(err, SSL_EFORMAT, "%s: tensor '%s' has a bad shape entry", path, nm);
        e->shape[d] = (int64_t)v;
        if (v == 0) zero = 1;
        else if (!zero && numel > data_size / v)
            return ssl_fail(err, SSL_EFORMAT,
                            "%s: tensor '%s' shape needs more bytes than the %llu-byte data section",
                            path, nm, (unsigned long long)data_size);
        else if (!zero) numel *= v;
    }
    if (zero) numel = 0;
    uint64_t need = numel * ssl_dtype_size(e->dtype);
    uint64_t b, en;
    if (!of || of->type != SSL_JSON_ARRAY || of->n != 2 || !json_u64(&of->items[0], &b) ||
        !json_u64(&of->items[1], &en) || en < b)
        return ssl_fail(err, SSL_EFORMAT, "%s: tensor '%s' has bad data_offsets", path, nm);
    if (en > data_size)
        return ssl_fail(err, SSL_EFORMAT,
                        "%s: tensor '%s' data [%llu, %llu) runs past the %llu-byte data section "
                        "(truncated file?)",
                        path, nm, (unsigned long long)b, (unsigned long long)en,
                        (unsigned long long)data_size);
    if (en - b != need)
        return ssl_fail(err, SSL_EFORMAT,
                        "%s: tensor '%s' has %llu bytes of data but its %s shape needs %llu", path,
                        nm, (unsigned long long)(en - b), ssl_dtype_name(e->dtype),
                        (unsigned long long)need);
    e->nbytes = (size_t)need;
    sp->begin = b;
    sp->end = en;
    return SSL_OK;
}

static int parse_meta(ssl_st_file *f, const ssl_json *m, const char *path, char *err)
{
    if (m->type != SSL_JSON_OBJECT)
        return ssl_fail(err, SSL_EFORMAT, "%s: __metadata__ is not an object", path);
    f->meta_keys = calloc((size_t)m->n + 1, sizeof(char *));
    f->meta_vals = calloc((size_t)m->n + 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_vals) return ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < m->n; i++) {
        const ssl_json *v = &m->items[i];
        if (v->type != SSL_JSON_STRING)
            return ssl_fail(err, SSL_EFORMAT, "%s: __metadata__ value of '%s' is not a string",
                            path, v->key);
        f->meta_keys[i] = dup_str(v->key);
        f->meta_vals[i] = dup_str(v->str);
        f->n_meta = i + 1;
        if (!f->meta_keys[i] || !f->meta_vals[i])
            return ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
    }
    return SSL_OK;
}

/* Header already parsed: fills entries, checks names and overlaps, then
 * reads the tensors into one blob, each placed at an 8-byte aligned offset
 * (files may pack a F32 right after a U8 tensor). */
static int load_body(ssl_st_file *f, FILE *fp, const ssl_json *hdr, uint64_t data_start,
                     uint64_t data_size, const char *path, char *err)
{
    int rc = SSL_OK, n_t = 0;
    for (int i = 0; i < hdr->n; i++) n_t += strcmp(hdr->items[i].key, "__metadata__") != 0;
    f->entries = calloc((size_t)n_t + 1, sizeof *f->entries);
    span *sp = calloc((size_t)n_t + 1, sizeof *sp);
    ssl_st_entry **by_name = calloc((size_t)n_t + 1, sizeof *by_name);
    if (!f->entries || !sp || !by_name) {
        rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    int seen_meta = 0;
    for (int i = 0; i < hdr->n && rc == SSL_OK; i++) {
        const ssl_json *m = &hdr->items[i];
        if (strcmp(m->key, "__metadata__") == 0) {
            if (seen_meta++) rc = ssl_fail(err, SSL_EFORMAT, "%s: duplicate __metadata__", path);
            else rc = parse_meta(f, m, path, err);
            continue;
        }
        ssl_st_entry *e = &f->entries[f->n];
        if (!(e->name = dup_str(m->key))) {
            rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
            break;
        }
        sp[f->n].idx = f->n;
        by_name[f->n] = e;
        f->n++;
        rc = parse_entry(e, &sp[f->n - 1], m, data_size, path, err);
    }
    if (rc != SSL_OK) goto done;

    qsort(by_name, (size_t)f->n, sizeof *by_name, cmp_name);
    for (int i = 1; i < f->n; i++)
        if (strcmp(by_name[i - 1]->name, by_name[i]->name) == 0) {
            rc = ssl_fail(err, SSL_EFORMAT, "%s: duplicate tensor name '%s'", path, by_name[i]->name);
            goto done;
        }
    qsort(sp, (size_t)f->n, sizeof *sp, cmp_span);
    uint64_t blob_size = 0;
    for (int i = 0; i < f->n; i++) {
        if (i > 0 && sp[i].begin < sp[i - 1].end) {
            rc = ssl_fail(err, SSL_EFORMAT, "%s: tensors '%s' and '%s' overlap in the data section",
                          path, f->entries[sp[i - 1].idx].name, f->entries[sp[i].idx].name);
            goto done;
        }
        blob_size = ((blob_size + 7) & ~(uint64_t)7) + (sp[i].end - sp[i].begin);
    }
    /* blob_size <= data_size + 8 * n, both already bounded by the real file. */
    f->blob = ssl_malloc((size_t)blob_size);
    if (!f->blob) {
        rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory for %llu bytes of tensors", path,
                      (unsigned long long)blob_size);
        goto done;
    }
    uint64_t at = 0;
    for (int i = 0; i < f->n; i++) {
        ssl_st_entry *e = &f->entries[sp[i].idx];
        at = (at + 7) & ~(uint64_t)7;
        e->data = (char *)f->blob + at;
        at += e->nbytes;
        if (e->nbytes == 0) continue;
        if (fseeko(fp, (off_t)(data_start + sp[i].begin), SEEK_SET) != 0 ||
            fread(e->data, 1, e->nbytes, fp) != e->nbytes) {
            rc = ssl_fail(err, SSL_EIO, "%s: short read of tensor '%s'%s%s", path, e->name,
                          ferror(fp) ? ": " : " (file truncated?)",
                          ferror(fp) ? strerror(errno) : "");
            goto done;
        }
    }
done:
    free(sp);
    free(by_name);
    return rc;
}

int ssl_st_load(ssl_st_file *f, const char *path, char *err)
{
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) return ssl_fail(err, SSL_EIO, "%s: cannot open: %s", path, strerror(errno));
    int rc = SSL_OK;
    char *htext = NULL;
    ssl_json hdr;
    memset(&hdr, 0, sizeof hdr);
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        rc = ssl_fail(err, SSL_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = ssl_fail(err, SSL_EIO, "%s: not a regular file", path);
        goto out;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    unsigned char b8[8];
    if (fsize < 8 || fread(b8, 1, 8, fp) != 8) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: %llu bytes, too short for a safetensors header size",
                      path, (unsigned long long)fsize);
        goto out;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b8[i];
    if (hlen > fsize - 8 || hlen > ST_MAX_HEADER) {
        rc = ssl_fail(err, SSL_EFORMAT,
                      "%s: header size %llu is larger than the file (%llu bytes) or the %u limit",
                      path, (unsigned long long)hlen, (unsigned long long)fsize, ST_MAX_HEADER);
        goto out;
    }
    htext = malloc(hlen ? (size_t)hlen : 1);
    if (!htext) {
        rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory for header", path);
        goto out;
    }
    if (fread(htext, 1, (size_t)hlen, fp) != hlen) {
        rc = ssl_fail(err, SSL_EIO, "%s: short read of the header", path);
        goto out;
    }
    char jerr[SSL_ERR_LEN];
    if (ssl_json_parse(&hdr, htext, (size_t)hlen, jerr) != SSL_OK) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: header is not valid JSON: %s", path, jerr);
        goto out;
    }
    if (hdr.type != SSL_JSON_OBJECT) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: header is not a JSON object", path);
        goto out;
    }
    rc = load_body(f, fp, &hdr, 8 + hlen, fsize - 8 - hlen, path, err);
out:
    ssl_json_free(&hdr);
    free(htext);
    fclose(fp);
    if (rc != SSL_OK) ssl_st_free(f);
    return rc;
}

const ssl_st_entry *ssl_st_find(const ssl_st_file *f, const char *name)
{
    for (int i = 0; f && name && i < f->n; i++)
        if (strcmp(f->entries[i].name, name) == 0) return &f->entries[i];
    return NULL;
}

const char *ssl_st_meta(const ssl_st_file *f, const char *key)
{
    for (int i = 0; f && key && i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

void ssl_st_free(ssl_st_file *f)
{
    if (!f) return;
    if (f->entries)
        for (int i = 0; i < f->n; i++) free(f->entries[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->entries);
    free(f->meta_keys);
    free(f->meta_vals);
    ssl_free(f->blob);
    memset(f, 0, sizeof *f);
}

/* ---------------------------------------------------------------- writer */

void ssl_st_writer_init(ssl_st_writer *w) { memset(w, 0, sizeof *w); }

int ssl_st_add(ssl_st_writer *w, const char *name, ssl_dtype dt, int ndim,
               const int64_t *shape, const void *data, char *err)
{
    if (!name || !*name || strcmp(name, "__metadata__") == 0)
        return ssl_fail(err, SSL_EINVAL, "safetensors: bad tensor name '%s'", name ? name : "");
    if (ssl_dtype_size(dt) == 0)
        return ssl_fail(err, SSL_EINVAL, "safetensors: tensor '%s' has unknown dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > SSL_ST_MAX_DIMS || (ndim > 0 && !shape))
        return ssl_fail(err, SSL_EINVAL, "safetensors: tensor '%s' has bad ndim %d", name, ndim);
    size_t nbytes = ssl_dtype_size(dt);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return ssl_fail(err, SSL_EINVAL, "safetensors: tensor '%s' has negative dim", name);
        if (shape[d] > 0 && nbytes > SIZE_MAX / (uint64_t)shape[d])
            return ssl_fail(err, SSL_EINVAL, "safetensors: tensor '%s' is too large", name);
        nbytes *= (size_t)shape[d];
    }
    if (nbytes > 0 && !data)
        return ssl_fail(err, SSL_EINVAL, "safetensors: tensor '%s' has NULL data", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->entries[i].name, name) == 0)
            return ssl_fail(err, SSL_EINVAL, "safetensors: duplicate tensor name '%s'", name);
    if (w->n == w->cap) {
        int nc = w->cap ? w->cap * 2 : 16;
        ssl_st_entry *ne = realloc(w->entries, (size_t)nc * sizeof *ne);
        if (!ne) return ssl_fail(err, SSL_ENOMEM, "safetensors: out of memory");
        w->entries = ne;
        w->cap = nc;
    }
    ssl_st_entry *e = &w->entries[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = dup_str(name))) return ssl_fail(err, SSL_ENOMEM, "safetensors: out of memory");
    e->dtype = dt;
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++) e->shape[d] = shape[d];
    e->data = (void *)data; /* borrowed; only read in ssl_st_write */
    e->nbytes = nbytes;
    w->n++;
    return SSL_OK;
}

int ssl_st_add_meta(ssl_st_writer *w, const char *key, const char *val, char *err)
{
    if (!key || !val) return ssl_fail(err, SSL_EINVAL, "safetensors: NULL metadata key or value");
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta_keys[i], key) == 0) { /* last value wins */
            char *v = dup_str(val);
            if (!v) return ssl_fail(err, SSL_ENOMEM, "safetensors: out of memory");
            free(w->meta_vals[i]);
            w->meta_vals[i] = v;
            return SSL_OK;
        }
    if (w->n_meta == w->cap_meta) {
        int nc = w->cap_meta ? w->cap_meta * 2 : 8;
        char **nk = realloc(w->meta_keys, (size_t)nc * sizeof *nk);
        if (!nk) return ssl_fail(err, SSL_ENOMEM, "safetensors: out of memory");
        w->meta_keys = nk;
        char **nv = realloc(w->meta_vals, (size_t)nc * sizeof *nv);
        if (!nv) return ssl_fail(err, SSL_ENOMEM, "safetensors: out of memory");
        w->meta_vals = nv;
        w->cap_meta = nc;
    }
    char *k = dup_str(key), *v = dup_str(val);
    if (!k || !v) {
        free(k);
        free(v);
        return ssl_fail(err, SSL_ENOMEM, "safetensors: out of memory");
    }
    w->meta_keys[w->n_meta] = k;
    w->meta_vals[w->n_meta] = v;
    w->n_meta++;
    return SSL_OK;
}

/* Header JSON in insertion order, padded with spaces to a multiple of 8 so
 * the data section starts aligned. *out is malloc'ed. */
static int build_header(const ssl_st_writer *w, char **out, size_t *out_len, const char *path,
                        char *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) return ssl_fail(err, SSL_ENOMEM, "%s: cannot build header: %s", path, strerror(errno));
    fputc('{', m);
    if (w->n_meta > 0) {
        fputs("\"__metadata__\":{", m);
        for (int i = 0; i < w->n_meta; i++) {
            if (i) fputc(',', m);
            ssl_json_write_string(m, w->meta_keys[i]);
            fputc(':', m);
            ssl_json_write_string(m, w->meta_vals[i]);
        }
        fputc('}', m);
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const ssl_st_entry *e = &w->entries[i];
        if (i || w->n_meta > 0) fputc(',', m);
        ssl_json_write_string(m, e->name);
        fprintf(m, ":{\"dtype\":\"%s\",\"shape\":[", ssl_dtype_name(e->dtype));
        for (int d = 0; d < e->ndim; d++) fprintf(m, "%s%lld", d ? "," : "", (long long)e->shape[d]);
        fprintf(m, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                (unsigned long long)(off + e->nbytes));
        off += e->nbytes;
    }
    fputc('}', m);
    while (ftell(m) % 8 != 0) fputc(' ', m);
    int bad = ferror(m);
    if (fclose(m) != 0 || bad) {
        free(buf);
        return ssl_fail(err, SSL_ENOMEM, "%s: cannot build header", path);
    }
    *out = buf;
    *out_len = len;
    return SSL_OK;
}

int ssl_st_write(const ssl_st_writer *w, const char *path, char *err)
{
    char *hdr = NULL;
    size_t hlen = 0;
    int rc = build_header(w, &hdr, &hlen, path, err);
    if (rc != SSL_OK) return rc;
    int np = w->n + 2;
    const void **parts = malloc((size_t)np * sizeof *parts);
    size_t *sizes = malloc((size_t)np * sizeof *sizes);
    unsigned char b8[8];
    if (!parts || !sizes) {
        rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
    } else {
        for (int i = 0; i < 8; i++) b8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
        parts[0] = b8;
        sizes[0] = 8;
        parts[1] = hdr;
        sizes[1] = hlen;
        for (int i = 0; i < w->n; i++) {
            parts[i + 2] = w->entries[i].data;
            sizes[i + 2] = w->entries[i].nbytes;
        }
        rc = ssl_write_file_atomic(path, parts, sizes, np, err);
    }
    free(parts);
    free(sizes);
    free(hdr);
    return rc;
}

void ssl_st_writer_free(ssl_st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->entries[i].name);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_vals[i]);
    }
    free(w->entries);
    free(w->meta_keys);
    free(w->meta_vals);
    memset(w, 0, sizeof *w);
}
