/* File formats: safetensors (checkpoints, golden test data), .npy (embeddings),
 * and a small JSON reader/writer for headers, configs and logs.
 * Every size read from disk is bounds-checked; writes are atomic
 * (temporary file, fsync, rename), so a failed write never leaves a damaged file. */
#ifndef SELFSUP_IO_H
#define SELFSUP_IO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ssl_dtype {
    SSL_DT_F32 = 0,
    SSL_DT_F64,
    SSL_DT_I64,
    SSL_DT_I32,
    SSL_DT_U8
} ssl_dtype;

size_t ssl_dtype_size(ssl_dtype dt);
const char *ssl_dtype_name(ssl_dtype dt); /* safetensors spelling: "F32", "I64", ... */

#define SSL_ST_MAX_DIMS 8

/* One tensor in a safetensors file. data points into the file's blob. */
typedef struct ssl_st_entry {
    char *name;
    ssl_dtype dtype;
    int ndim;
    int64_t shape[SSL_ST_MAX_DIMS];
    void *data;
    size_t nbytes;
} ssl_st_entry;

/* A loaded safetensors file: header parsed, data in one owned blob. */
typedef struct ssl_st_file {
    int n;
    ssl_st_entry *entries;
    int n_meta;
    char **meta_keys; /* "__metadata__" string-to-string pairs */
    char **meta_vals;
    void *blob;
} ssl_st_file;

/* Loads and validates (header size, JSON, dtypes, shapes vs offsets, offsets
 * inside the file, no overlaps). err gets one line naming the file. */
int ssl_st_load(ssl_st_file *f, const char *path, char *err);
const ssl_st_entry *ssl_st_find(const ssl_st_file *f, const char *name);
const char *ssl_st_meta(const ssl_st_file *f, const char *key); /* NULL if absent */
void ssl_st_free(ssl_st_file *f);

/* Writer: collects borrowed tensors and metadata, then writes atomically. */
typedef struct ssl_st_writer {
    int n, cap;
    ssl_st_entry *entries; /* data borrowed, names copied */
    int n_meta, cap_meta;
    char **meta_keys, **meta_vals;
} ssl_st_writer;

void ssl_st_writer_init(ssl_st_writer *w);
int ssl_st_add(ssl_st_writer *w, const char *name, ssl_dtype dt, int ndim,
               const int64_t *shape, const void *data, char *err);
int ssl_st_add_meta(ssl_st_writer *w, const char *key, const char *val, char *err);
int ssl_st_write(const ssl_st_writer *w, const char *path, char *err);
void ssl_st_writer_free(ssl_st_writer *w);

/* .npy v1.0, little-endian, C order. dt: F32 or I32/I64. Atomic. */
int ssl_npy_write(const char *path, ssl_dtype dt, int ndim, const int64_t *shape,
                  const void *data, char *err);
/* Reads a .npy of F32 (any ndim <= 8); *data is ssl_malloc'ed. */
int ssl_npy_read_f32(const char *path, int *ndim, int64_t *shape, float **data, char *err);

/* Atomic whole-file write: path.tmp.<pid>, fsync, rename, fsync dir. */
int ssl_write_file_atomic(const char *path, const void *const *parts,
                          const size_t *sizes, int n_parts, char *err);

/* Minimal JSON: parse into a tree (objects, arrays, strings, numbers, bools, null). */
typedef enum ssl_json_type {
    SSL_JSON_NULL = 0,
    SSL_JSON_BOOL,
    SSL_JSON_NUMBER,
    SSL_JSON_STRING,
    SSL_JSON_ARRAY,
    SSL_JSON_OBJECT
} ssl_json_type;

typedef struct ssl_json {
    ssl_json_type type;
    double num;        /* NUMBER, BOOL (0/1) */
    char *str;         /* STRING (unescaped, NUL-terminated) */
    char *key;         /* member name when inside an OBJECT */
    int n;             /* ARRAY / OBJECT children */
    struct ssl_json *items;
} ssl_json;

/* Parses len bytes (not NUL-terminated needed); depth and size limited. */
int ssl_json_parse(ssl_json *out, const char *text, size_t len, char *err);
const ssl_json *ssl_json_get(const ssl_json *obj, const char *key);
void ssl_json_free(ssl_json *j);
/* Writes s as a JSON string literal (quotes, escapes) to f. */
void ssl_json_write_string(FILE *f, const char *s);

#ifdef __cplusplus
}
#endif
#endif
