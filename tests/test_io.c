/* IO tests: JSON parser (valid, malformed, truncated, mutated input),
 * safetensors round trip and every kind of bad file, atomic writes that fail
 * cleanly, .npy round trip, and interop with NumPy and PyTorch through
 * /usr/bin/python3 (required: CI installs it). */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/core.h"
#include "selfsup/io.h"

#include "check.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static char tdir[256];

static void tpath(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tdir, name);
}

static void write_raw(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* A file whose name contains ".tmp." left in tdir means a failed write leaked. */
static int count_tmp_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------ JSON */

/* Parses a NUL-terminated literal through an exact-size heap copy, so ASan
 * catches any read past len. */
static int parse_exact(ssl_json *j, const char *s, size_t len, char *err)
{
    char *buf = malloc(len ? len : 1);
    memcpy(buf, s, len);
    int rc = ssl_json_parse(j, buf, len, err);
    free(buf);
    return rc;
}

static void test_json_valid(void)
{
    char err[SSL_ERR_LEN];
    ssl_json j;
    const char *txt = " { \"a\" : [1, -2.5e2, 0.125, true, false, null, {\"deep\": [[]]}],\n"
                      "  \"s\": \"q\\\"b\\\\s\\/\\n\\t\\u00e9\\u20ac\\ud83d\\ude00\",\n"
                      "  \"empty\": {}, \"e2\": \"\" } ";
    int rc = parse_exact(&j, txt, strlen(txt), err);
    CHECK(rc == SSL_OK, "valid json rejected: %s", err);
    if (rc != SSL_OK) return;
    CHECK(j.type == SSL_JSON_OBJECT && j.n == 4, "object with 4 members");
    const ssl_json *a = ssl_json_get(&j, "a");
    CHECK(a && a->type == SSL_JSON_ARRAY && a->n == 7, "array of 7");
    if (a && a->n == 7) {
        CHECK(a->items[0].type == SSL_JSON_NUMBER && a->items[0].num == 1, "1");
        CHECK(a->items[1].num == -250.0, "-2.5e2 -> %g", a->items[1].num);
        CHECK(a->items[2].num == 0.125, "0.125");
        CHECK(a->items[3].type == SSL_JSON_BOOL && a->items[3].num == 1, "true");
        CHECK(a->items[4].type == SSL_JSON_BOOL && a->items[4].num == 0, "false");
        CHECK(a->items[5].type == SSL_JSON_NULL, "null");
        const ssl_json *deep = ssl_json_get(&a->items[6], "deep");
        CHECK(deep && deep->type == SSL_JSON_ARRAY && deep->n == 1 &&
                  deep->items[0].type == SSL_JSON_ARRAY && deep->items[0].n == 0,
              "nested [[]]");
    }
    const ssl_json *s = ssl_json_get(&j, "s");
    const char *want = "q\"b\\s/\n\t\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";
    CHECK(s && s->type == SSL_JSON_STRING && strcmp(s->str, want) == 0, "escapes decoded: '%s'",
          s && s->str ? s->str : "(null)");
    const ssl_json *e = ssl_json_get(&j, "empty");
    CHECK(e && e->type == SSL_JSON_OBJECT && e->n == 0, "empty object");
    const ssl_json *e2 = ssl_json_get(&j, "e2");
    CHECK(e2 && e2->type == SSL_JSON_STRING && e2->str[0] == '\0', "empty string");
    CHECK(ssl_json_get(&j, "missing") == NULL, "absent key gives NULL");
    CHECK(ssl_json_get(a, "a") == NULL, "get on an array gives NULL");
    ssl_json_free(&j);

    /* len bounds the input: the bytes after it must not be read. */
    rc = ssl_json_parse(&j, "[1,2]garbage", 5, err);
    CHECK(rc == SSL_OK && j.type == SSL_JSON_ARRAY && j.n == 2, "len-bounded parse: %s", err);
    ssl_json_free(&j);
    rc = ssl_json_parse(&j, "12345", 2, err);
    CHECK(rc == SSL_OK && j.num == 12, "len-bounded number: %g", j.num);
    ssl_json_free(&j);

    /* 64 levels parse, far more do not (and do not blow the stack). */
    char deep[4096];
    int nd = 60;
    for (int i = 0; i < nd; i++) deep[i] = '[';
    for (int i = 0; i < nd; i++) deep[nd + i] = ']';
    rc = parse_exact(&j, deep, 2 * (size_t)nd, err);
    CHECK(rc == SSL_OK, "60 levels of nesting rejected: %s", err);
    ssl_json_free(&j);
    nd = 2000;
    for (int i = 0; i < nd; i++) deep[i] = '[';
    for (int i = 0; i < nd; i++) deep[nd + i] = ']';
    rc = parse_exact(&j, deep, 2 * (size_t)nd, err);
    CHECK(rc == SSL_EFORMAT && strstr(err, "deep"), "2000 levels accepted: %s", err);
}

static void test_json_malformed(void)
{
    static const char *bad[] = {
        "", "   ", "{", "}", "[", "[1,", "[1,]", "[,1]", "{,}", "{\"a\"}", "{\"a\":}",
        "{\"a\" 1}", "{a:1}", "{\"a\":1,}", "[1 2]", "\"abc", "\"\\x\"", "\"\\u12\"",
        "\"\\u12G4\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\u0000\"",
        "01", "1.", ".5", "-", "1e", "1e+", "+1", "tru", "nul", "fals", "True", "NaN",
        "1 2", "{} {}", "\"a\nb\"", "'a'", "[\"\\", "\"\\", "{\"a\":1}}", "[1]]",
        "123456789012345678901234567890123456789012345678901234567890123456789",
    };
    char err[SSL_ERR_LEN];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ssl_json j;
        err[0] = '\0';
        int rc = parse_exact(&j, bad[i], strlen(bad[i]), err);
        CHECK(rc != SSL_OK, "malformed json accepted: <%s>", bad[i]);
        CHECK(strncmp(err, "json:", 5) == 0 && strchr(err, '\n') == NULL,
              "one-line message for <%s>: %s", bad[i], err);
        CHECK(j.type == SSL_JSON_NULL && j.n == 0 && j.items == NULL, "tree emptied on error");
    }

    /* Every proper prefix of a valid document is invalid. */
    const char *doc = "{\"k\":[1,2.5,{\"x\":\"\\u00e9\\\"\"}],\"t\":true,\"n\":null}";
    size_t n = strlen(doc);
    int bad_prefix = 0;
    for (size_t len = 0; len < n; len++) {
        ssl_json j;
        if (parse_exact(&j, doc, len, err) == SSL_OK) {
            bad_prefix++;
            ssl_json_free(&j);
        }
    }
    CHECK(bad_prefix == 0, "%d prefixes accepted", bad_prefix);

    /* Random byte mutations must never crash (ASan checks the reads). */
    ssl_rng r;
    ssl_rng_seed(&r, 7);
    char buf[128];
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, doc, n);
        int muts = 1 + (int)ssl_rng_below(&r, 4);
        for (int m = 0; m < muts; m++)
            buf[ssl_rng_below(&r, (uint32_t)n)] = "{}[]\",:\\u0e -"[ssl_rng_below(&r, 14)];
        ssl_json j;
        if (parse_exact(&j, buf, n, err) == SSL_OK) ssl_json_free(&j);
    }
    CHECK(1, "mutations survived");
}

static void test_json_write_string(void)
{
    const char *s = "a\"b\\c\nd\te\x01f\xC3\xA9";
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    ssl_json_write_string(m, s);
    fclose(m);
    CHECK(strchr(buf, '\n') == NULL && strchr(buf, '\x01') == NULL, "control chars escaped: %s", buf);
    ssl_json j;
    char err[SSL_ERR_LEN];
    int rc = ssl_json_parse(&j, buf, len, err);
    CHECK(rc == SSL_OK && j.type == SSL_JSON_STRING && strcmp(j.str, s) == 0,
          "write_string round trip: %s", buf);
    if (rc == SSL_OK) ssl_json_free(&j);
    free(buf);
}

/* ----------------------------------------------------------- safetensors */

static void test_st_roundtrip(void)
{
    char path[512], err[SSL_ERR_LEN];
    tpath(path, sizeof path, "rt.safetensors");
    float w[6] = { 1.5f, -2, 3.25f, 0, 1e-8f, -7 };
    int64_t idx[4] = { 0, -1, INT64_MAX, INT64_MIN };
    uint8_t u[3] = { 1, 2, 255 };
    float v[5] = { 10, 20, 30, 40, 50 };
    double sc = 3.141592653589793;
    int64_t sw[2] = { 2, 3 }, sidx[1] = { 4 }, su[1] = { 3 }, sv[1] = { 5 }, sz[2] = { 0, 4 };

    ssl_st_writer wr;
    ssl_st_writer_init(&wr);
    int rc = SSL_OK;
    rc |= ssl_st_add(&wr, "enc.w", SSL_DT_F32, 2, sw, w, err);
    rc |= ssl_st_add(&wr, "idx", SSL_DT_I64, 1, sidx, idx, err);
    rc |= ssl_st_add(&wr, "u8", SSL_DT_U8, 1, su, u, err);
    rc |= ssl_st_add(&wr, "after_u8", SSL_DT_F32, 1, sv, v, err); /* unaligned in the file */
    rc |= ssl_st_add(&wr, "scalar", SSL_DT_F64, 0, NULL, &sc, err);
    rc |= ssl_st_add(&wr, "empty", SSL_DT_F32, 2, sz, NULL, err);
    rc |= ssl_st_add_meta(&wr, "method", "simclr", err);
    rc |= ssl_st_add_meta(&wr, "note", "q\"uo\\te \xC3\xA9", err);
    rc |= ssl_st_add_meta(&wr, "method", "byol", err); /* last wins */
    CHECK(rc == SSL_OK, "writer add: %s", err);

    CHECK(ssl_st_add(&wr, "idx", SSL_DT_I64, 1, sidx, idx, err) == SSL_EINVAL &&
              strstr(err, "duplicate"), "duplicate name rejected: %s", err);
    CHECK(ssl_st_add(&wr, "__metadata__", SSL_DT_F32, 1, sv, v, err) == SSL_EINVAL, "reserved name");
    int64_t neg[1] = { -1 };
    CHECK(ssl_st_add(&wr, "neg", SSL_DT_F32, 1, neg, v, err) == SSL_EINVAL, "negative dim");
    CHECK(ssl_st_add(&wr, "nd", SSL_DT_F32, 9, sw, v, err) == SSL_EINVAL, "ndim > 8");
    CHECK(ssl_st_add(&wr, "dt", (ssl_dtype)42, 1, sv, v, err) == SSL_EINVAL, "bad dtype");
    CHECK(ssl_st_add(&wr, "nul", SSL_DT_F32, 1, sv, NULL, err) == SSL_EINVAL, "NULL data");

    rc = ssl_st_write(&wr, path, err);
    CHECK(rc == SSL_OK, "write: %s", err);
    ssl_st_writer_free(&wr);
    CHECK(count_tmp_files(tdir) == 0, "temp file left after a good write");

    /* Header length is a multiple of 8 and the file is exactly 8 + N + data. */
    FILE *fp = fopen(path, "rb");
    unsigned char b8[8] = { 0 };
    CHECK(fp && fread(b8, 1, 8, fp) == 8, "read header size");
    if (fp) fclose(fp);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | b8[i];
    CHECK(hl % 8 == 0, "header length %llu padded to 8", (unsigned long long)hl);
    CHECK(file_size(path) == (long)(8 + hl + 24 + 32 + 3 + 20 + 8), "file size %ld", file_size(path));

    ssl_st_file f;
    rc = ssl_st_load(&f, path, err);
    CHECK(rc == SSL_OK, "load: %s", err);
    if (rc != SSL_OK) return;
    CHECK(f.n == 6, "6 tensors, got %d", f.n);
    const ssl_st_entry *e = ssl_st_find(&f, "enc.w");
    CHECK(e && e->dtype == SSL_DT_F32 && e->ndim == 2 && e->shape[0] == 2 && e->shape[1] == 3 &&
              e->nbytes == 24 && memcmp(e->data, w, 24) == 0, "enc.w round trip");
    e = ssl_st_find(&f, "idx");
    CHECK(e && e->dtype == SSL_DT_I64 && e->ndim == 1 && e->shape[0] == 4 &&
              memcmp(e->data, idx, 32) == 0, "idx round trip");
    e = ssl_st_find(&f, "u8");
    CHECK(e && e->dtype == SSL_DT_U8 && e->nbytes == 3 && memcmp(e->data, u, 3) == 0, "u8");
    e = ssl_st_find(&f, "after_u8");
    CHECK(e && e->nbytes == 20 && ((uintptr_t)e->data % 8) == 0 && memcmp(e->data, v, 20) == 0,
          "tensor after u8 is aligned in memory and intact");
    if (e) CHECK(((const float *)e->data)[4] == 50.0f, "float read through aligned pointer");
    e = ssl_st_find(&f, "scalar");
    CHECK(e && e->dtype == SSL_DT_F64 && e->ndim == 0 && e->nbytes == 8 &&
              *(const double *)e->data == sc, "scalar f64");
    e = ssl_st_find(&f, "empty");
    CHECK(e && e->ndim == 2 && e->shape[0] == 0 && e->shape[1] == 4 && e->nbytes == 0, "empty");
    CHECK(ssl_st_find(&f, "nope") == NULL, "absent tensor");
    CHECK(f.n_meta == 2, "2 meta, got %d", f.n_meta);
    const char *mv = ssl_st_meta(&f, "method");
    CHECK(mv && strcmp(mv, "byol") == 0, "meta method: %s", mv ? mv : "(null)");
    mv = ssl_st_meta(&f, "note");
    CHECK(mv && strcmp(mv, "q\"uo\\te \xC3\xA9") == 0, "meta note escaped round trip");
    CHECK(ssl_st_meta(&f, "absent") == NULL, "absent meta");
    ssl_st_free(&f);
    CHECK(f.n == 0 && f.blob == NULL && f.entries == NULL, "free zeroes the struct");

    /* Python's json and numpy read our file the way the format says. */
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import json,struct,numpy as np\n"
             "b=open('%s','rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); d=b[8+n:]\n"
             "assert h['__metadata__']['method']=='byol', h\n"
             "o=h['enc.w']['data_offsets']; a=np.frombuffer(d[o[0]:o[1]],np.float32).reshape(h['enc.w']['shape'])\n"
             "assert a.shape==(2,3) and a[0,1]==-2 and a[1,2]==-7, a\n"
             "o=h['idx']['data_offsets']; i=np.frombuffer(d[o[0]:o[1]],np.int64)\n"
             "assert i[1]==-1 and i[2]==2**63-1, i\n"
             "\"",
             path);
    CHECK(system(cmd) == 0, "python could not read our safetensors (needs /usr/bin/python3 + numpy)");
}

/* Writes u64 header length + header + data_len zero bytes. */
static void craft_st(const char *path, const char *header, size_t data_len)
{
    size_t hl = strlen(header);
    size_t n = 8 + hl + data_len;
    unsigned char *b = calloc(n, 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    write_raw(path, b, n);
    free(b);
}

static void expect_load_fail(const char *path, const char *what, const char *needle)
{
    ssl_st_file f;
    char err[SSL_ERR_LEN] = "";
    int rc = ssl_st_load(&f, path, err);
    CHECK(rc != SSL_OK, "%s: bad file loaded", what);
    CHECK(strstr(err, path) != NULL, "%s: message does not name the file: %s", what, err);
    CHECK(!needle || strstr(err, needle), "%s: message lacks '%s': %s", what, needle, err);
    CHECK(strchr(err, '\n') == NULL, "%s: message is one line", what);
    CHECK(f.n == 0 && f.blob == NULL && f.entries == NULL && f.meta_keys == NULL,
          "%s: struct left empty", what);
    if (rc == SSL_OK) ssl_st_free(&f);
}

static void test_st_bad(void)
{
    char p[512];
    tpath(p, sizeof p, "missing.safetensors");
    expect_load_fail(p, "missing file", "cannot open");

    expect_load_fail(tdir, "a directory", NULL);

    tpath(p, sizeof p, "short.safetensors");
    write_raw(p, "\x10\x00\x00\x00", 4);
    expect_load_fail(p, "4-byte file", "too short");
    write_raw(p, "", 0);
    expect_load_fail(p, "empty file", "too short");

    tpath(p, sizeof p, "bighdr.safetensors");
    unsigned char b[24] = { 0xE8, 0x03 }; /* claims 1000 header bytes, has 16 */
    memcpy(b + 8, "{}              ", 16);
    write_raw(p, b, sizeof b);
    expect_load_fail(p, "header size > file", "header size");
    memset(b, 0xFF, 8); /* 2^64-1: must not be allocated */
    write_raw(p, b, sizeof b);
    expect_load_fail(p, "header size 2^64-1", "header size");

    tpath(p, sizeof p, "notjson.safetensors");
    craft_st(p, "{not json}      ", 0);
    expect_load_fail(p, "header not JSON", "JSON");
    craft_st(p, "[1, 2]  ", 0);
    expect_load_fail(p, "header is an array", "object");

    tpath(p, sizeof p, "cases.safetensors");
    struct { const char *hdr; size_t data; const char *what, *needle; } cases[] = {
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
          "offsets beyond the file", "past" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[100,108]}}", 16,
          "offsets far beyond the file", "past" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 12,
          "shape/offset mismatch", "needs" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 16,
          "end before begin", "data_offsets" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 16,
          "one offset", "data_offsets" },
        { "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
          "unknown dtype", "BF16" },
        { "{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype not string", "dtype" },
        { "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "no dtype", "dtype" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "negative dim", "shape" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8, "fractional dim", "shape" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
          "9 dims", "dims" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
          "\"data_offsets\":[0,8]}}", 8, "shape product overflow", "shape" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap", "overlap" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16,
          "duplicate name", "duplicate" },
        { "{\"__metadata__\":{\"k\":1}}", 0, "non-string metadata", "__metadata__" },
        { "{\"__metadata__\":[\"k\"]}", 0, "metadata not object", "__metadata__" },
        { "{\"a\":[1,2]}", 0, "entry not object", "object" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        craft_st(p, cases[i].hdr, cases[i].data);
        expect_load_fail(p, cases[i].what, cases[i].needle);
    }

    /* A good crafted file loads, so the failures above are about the flaw. */
    craft_st(p, "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"I32\",\"shape\":[2],"
                "\"data_offsets\":[0,8]}}", 8);
    ssl_st_file f;
    char err[SSL_ERR_LEN];
    int rc = ssl_st_load(&f, p, err);
    CHECK(rc == SSL_OK && f.n == 1 && ssl_st_meta(&f, "k"), "crafted good file: %s", err);
    if (rc == SSL_OK) ssl_st_free(&f);

    /* Truncated data section: a real file with its last bytes cut off. */
    tpath(p, sizeof p, "trunc.safetensors");
    float x[16] = { 0 };
    int64_t s16[1] = { 16 };
    ssl_st_writer w;
    ssl_st_writer_init(&w);
    ssl_st_add(&w, "x", SSL_DT_F32, 1, s16, x, err);
    rc = ssl_st_write(&w, p, err);
    ssl_st_writer_free(&w);
    CHECK(rc == SSL_OK, "write: %s", err);
    CHECK(truncate(p, file_size(p) - 3) == 0, "truncate");
    expect_load_fail(p, "truncated data section", "truncated");
}

/* ------------------------------------------------------------ atomicity */

static void test_atomic(void)
{
    char p[1024], sub[512], err[SSL_ERR_LEN] = "";
    const char *msg = "hello";
    const void *parts[1] = { msg };
    size_t sizes[1] = { 5 };

    /* Non-existent directory: clean error naming the path, nothing created. */
    tpath(sub, sizeof sub, "no_such_dir");
    snprintf(p, sizeof p, "%s/out.bin", sub);
    int rc = ssl_write_file_atomic(p, parts, sizes, 1, err);
    CHECK(rc == SSL_EIO && strstr(err, p), "write into missing dir: %d %s", rc, err);
    CHECK(file_size(sub) < 0 && count_tmp_files(tdir) == 0, "nothing left behind");

    /* Writers report it the same way. */
    ssl_st_writer w;
    ssl_st_writer_init(&w);
    snprintf(p, sizeof p, "%s/m.safetensors", sub);
    rc = ssl_st_write(&w, p, err);
    CHECK(rc == SSL_EIO && strstr(err, p), "st_write into missing dir: %s", err);
    int64_t one = 1;
    float fv = 1;
    snprintf(p, sizeof p, "%s/e.npy", sub);
    rc = ssl_npy_write(p, SSL_DT_F32, 1, &one, &fv, err);
    CHECK(rc == SSL_EIO && strstr(err, p), "npy_write into missing dir: %s", err);

    /* Existing destination survives a write that fails midway. */
    tpath(p, sizeof p, "keep.bin");
    rc = ssl_write_file_atomic(p, parts, sizes, 1, err);
    CHECK(rc == SSL_OK && file_size(p) == 5, "first write: %s", err);

    static char big[1 << 20];
    memset(big, 'x', sizeof big);
    const void *bparts[2] = { big, big };
    size_t bsizes[2] = { sizeof big, sizeof big };
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096; /* the write hits EFBIG after 4 KB */
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
    rc = ssl_write_file_atomic(p, bparts, bsizes, 2, err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    CHECK(rc == SSL_EIO && strstr(err, p), "oversized write must fail: %d %s", rc, err);
    CHECK(file_size(p) == 5, "destination untouched after failed write (size %ld)", file_size(p));
    CHECK(count_tmp_files(tdir) == 0, "temp file removed after failed write");

    /* A bad part after a good one fails the same way. */
    const void *nparts[2] = { msg, NULL };
    size_t nsizes[2] = { 5, 10 };
    rc = ssl_write_file_atomic(p, nparts, nsizes, 2, err);
    CHECK(rc == SSL_EIO && file_size(p) == 5 && count_tmp_files(tdir) == 0,
          "NULL part: %d %s", rc, err);

    /* Rename fails when the destination is a directory: temp must go. */
    tpath(p, sizeof p, "adir");
    mkdir(p, 0755);
    char inner[1100];
    snprintf(inner, sizeof inner, "%s/f", p);
    write_raw(inner, "x", 1); /* non-empty, so rename cannot replace it */
    rc = ssl_write_file_atomic(p, parts, sizes, 1, err);
    CHECK(rc == SSL_EIO && strstr(err, "rename"), "rename over a directory: %s", err);
    CHECK(count_tmp_files(tdir) == 0, "temp file removed after failed rename");
    unlink(inner);
    rmdir(p);

    /* Overwrite works and replaces the content. */
    tpath(p, sizeof p, "keep.bin");
    sizes[0] = 3;
    rc = ssl_write_file_atomic(p, parts, sizes, 1, err);
    CHECK(rc == SSL_OK && file_size(p) == 3, "overwrite: %s", err);
}

/* ------------------------------------------------------------------ npy */

static void test_npy(void)
{
    char p[512], p1[512], pi[512], err[SSL_ERR_LEN], cmd[4096];
    float a[12];
    for (int i = 0; i < 12; i++) a[i] = 0.5f * (float)i;
    int64_t s2[2] = { 3, 4 }, s1[1] = { 5 };
    int64_t iv[5] = { -3, 0, 7, INT64_MAX, 42 };
    tpath(p, sizeof p, "emb.npy");
    tpath(p1, sizeof p1, "vec.npy");
    tpath(pi, sizeof pi, "ints.npy");
    CHECK(ssl_npy_write(p, SSL_DT_F32, 2, s2, a, err) == SSL_OK, "npy write: %s", err);
    CHECK(ssl_npy_write(p1, SSL_DT_F32, 1, s1, a, err) == SSL_OK, "npy write 1-D: %s", err);
    CHECK(ssl_npy_write(pi, SSL_DT_I64, 1, s1, iv, err) == SSL_OK, "npy write i64: %s", err);

    /* Header layout: multiple of 64, ends in '\n', 1-D shape spelled "(5,)". */
    FILE *fp = fopen(p1, "rb");
    unsigned char h[128] = { 0 };
    size_t got = fp ? fread(h, 1, sizeof h, fp) : 0;
    if (fp) fclose(fp);
    unsigned hl = h[8] | (unsigned)h[9] << 8;
    CHECK(got >= 64 && memcmp(h, "\x93NUMPY\x01\x00", 8) == 0, "magic and version 1.0");
    CHECK((10 + hl) % 64 == 0 && 10 + hl <= sizeof h && h[10 + hl - 1] == '\n', "header padding");
    h[sizeof h - 1] = 0;
    CHECK(strstr((char *)h + 10, "'shape': (5,)") != NULL, "1-D shape: %s", h + 10);
    CHECK(file_size(p1) == (long)(10 + hl + 20), "file size");

    int nd = 0;
    int64_t sh[SSL_ST_MAX_DIMS];
    float *d = NULL;
    int rc = ssl_npy_read_f32(p, &nd, sh, &d, err);
    CHECK(rc == SSL_OK && nd == 2 && sh[0] == 3 && sh[1] == 4 && d && memcmp(d, a, 48) == 0,
          "npy read back: %s", err);
    ssl_free(d);
    rc = ssl_npy_read_f32(pi, &nd, sh, &d, err);
    CHECK(rc == SSL_EFORMAT && strstr(err, pi) && strstr(err, "<i8") && d == NULL,
          "i64 file read as f32 rejected: %s", err);

    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import numpy as np\n"
             "a=np.load('%s'); assert a.dtype==np.float32 and a.shape==(3,4), a\n"
             "assert (a==np.arange(12,dtype=np.float32).reshape(3,4)*0.5).all(), a\n"
             "v=np.load('%s'); assert v.shape==(5,) and v[4]==2.0, v\n"
             "i=np.load('%s'); assert i.dtype==np.int64 and list(i)==[-3,0,7,2**63-1,42], i\n"
             "np.save('%s/np_written.npy', np.arange(24,dtype=np.float32).reshape(2,3,4)-5)\n"
             "np.save('%s/np_f8.npy', np.zeros(3))\n"
             "\"",
             p, p1, pi, tdir, tdir);
    CHECK(system(cmd) == 0, "numpy could not load our .npy (needs /usr/bin/python3 + numpy)");

    /* A file numpy wrote reads in C. */
    tpath(p, sizeof p, "np_written.npy");
    rc = ssl_npy_read_f32(p, &nd, sh, &d, err);
    CHECK(rc == SSL_OK && nd == 3 && sh[0] == 2 && sh[1] == 3 && sh[2] == 4, "numpy file: %s", err);
    if (rc == SSL_OK) CHECK(d[0] == -5 && d[23] == 18, "numpy data %g %g", d[0], d[23]);
    ssl_free(d);
    tpath(p, sizeof p, "np_f8.npy");
    rc = ssl_npy_read_f32(p, &nd, sh, &d, err);
    CHECK(rc == SSL_EFORMAT && strstr(err, "<f8"), "f8 rejected: %s", err);

    /* Bad files. */
    tpath(p, sizeof p, "bad.npy");
    struct { const char *bytes; size_t n; const char *what; } bad[] = {
        { "", 0, "empty" },
        { "\x93NUMP", 5, "short magic" },
        { "PK\x03\x04zipzipzip", 13, "not npy" },
        { "\x93NUMPY\x01\x00\xff\xff{}", 12, "header length lies" },
        { "\x93NUMPY\x09\x00\x02\x00{}", 12, "unknown version" },
        { "\x93NUMPY\x01\x00\x02\x00{}", 12, "dict without keys" },
        { "\x93NUMPY\x01\x00\x3c\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }   \n",
          0, "truncated data" },
        { "\x93NUMPY\x01\x00\x3c\x00{'descr': '<f4', 'fortran_order': True, 'shape': (0,), }    \n",
          0, "fortran order" },
        { "\x93NUMPY\x01\x00\x3c\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,3 }    \n",
          0, "bad shape tuple" },
        { "\x93NUMPY\x01\x00\x3c\x00{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999,99999999999,99999999999) }\n",
          0, "huge shape" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = bad[i].n;
        if (n == 0 && bad[i].bytes[0]) { /* fix up the header length for this one */
            n = strlen(bad[i].bytes + 10) + 10;
            char *b = malloc(n);
            memcpy(b, bad[i].bytes, n);
            b[8] = (char)((n - 10) & 0xFF);
            b[9] = (char)((n - 10) >> 8);
            write_raw(p, b, n);
            free(b);
        } else {
            write_raw(p, bad[i].bytes, n);
        }
        d = (float *)1;
        rc = ssl_npy_read_f32(p, &nd, sh, &d, err);
        CHECK(rc != SSL_OK && strstr(err, p) && d == NULL, "%s: %d %s", bad[i].what, rc, err);
    }
    tpath(p, sizeof p, "absent.npy");
    rc = ssl_npy_read_f32(p, &nd, sh, &d, err);
    CHECK(rc == SSL_EIO && strstr(err, p), "missing npy: %s", err);
}

/* ------------------------------------------------------- PyTorch interop */

static void test_torch_golden(void)
{
    char p[512], dir[512], cmd[4096], err[SSL_ERR_LEN];
    tpath(p, sizeof p, "golden.safetensors");
    /* golden.py sits next to this file: tests/torch/golden.py. */
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    if (slash) snprintf(slash, sizeof dir - (size_t)(slash - dir), "/torch");
    else snprintf(dir, sizeof dir, "torch");
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import sys; sys.path.insert(0, '%s'); sys.path.insert(0, 'tests/torch')\n"
             "import torch, golden\n"
             "golden.save('%s', {'w': torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.25,\n"
             "  'idx': torch.tensor([1, -2, 3]), 'b': torch.tensor([1, 2, 255], dtype=torch.uint8),\n"
             "  'h': torch.full((2, 2), 7, dtype=torch.int32), 'd': torch.ones(2, dtype=torch.float64)},\n"
             "  {'epoch': 3, 'note': 'h\\u00e9'})\n"
             "\"",
             dir, p);
    int rc = system(cmd);
    CHECK(rc == 0, "PyTorch golden.save failed (needs /usr/bin/python3 + torch)");
    if (rc != 0) return;
    ssl_st_file f;
    rc = ssl_st_load(&f, p, err);
    CHECK(rc == SSL_OK, "load PyTorch safetensors: %s", err);
    if (rc != SSL_OK) return;
    const ssl_st_entry *e = ssl_st_find(&f, "w");
    float ww[6] = { 0, 0.25f, 0.5f, 0.75f, 1, 1.25f };
    CHECK(e && e->dtype == SSL_DT_F32 && e->ndim == 2 && e->shape[1] == 3, "torch w");
    if (e) CHECK_CLOSE((const float *)e->data, ww, 6, 1e-7, 0, "torch w values");
    e = ssl_st_find(&f, "idx");
    CHECK(e && e->dtype == SSL_DT_I64 && ((const int64_t *)e->data)[1] == -2, "torch idx");
    e = ssl_st_find(&f, "b");
    CHECK(e && e->dtype == SSL_DT_U8 && ((const uint8_t *)e->data)[2] == 255, "torch u8");
    e = ssl_st_find(&f, "h");
    CHECK(e && e->dtype == SSL_DT_I32 && ((uintptr_t)e->data % 4) == 0 &&
              ((const int32_t *)e->data)[3] == 7, "torch i32 after u8, aligned");
    e = ssl_st_find(&f, "d"); /* golden.py stores float64 as F32 */
    CHECK(e && e->dtype == SSL_DT_F32 && ((const float *)e->data)[1] == 1.0f, "torch f64->f32");
    const char *m = ssl_st_meta(&f, "epoch");
    CHECK(m && strcmp(m, "3") == 0, "torch meta epoch");
    m = ssl_st_meta(&f, "note");
    CHECK(m && strcmp(m, "h\xC3\xA9") == 0, "torch meta \\u00e9 decoded: %s", m ? m : "(null)");
    ssl_st_free(&f);
}

/* Removes the files this test made (flat directory). */
static void cleanup(void)
{
    DIR *d = opendir(tdir);
    if (!d) return;
    char p[1024];
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", tdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tdir);
}

int main(void)
{
    snprintf(tdir, sizeof tdir, "/tmp/selfsup_test_io_XXXXXX");
    if (!mkdtemp(tdir)) { perror("mkdtemp"); return 2; }

    CHECK(ssl_dtype_size(SSL_DT_F32) == 4 && ssl_dtype_size(SSL_DT_F64) == 8 &&
              ssl_dtype_size(SSL_DT_I64) == 8 && ssl_dtype_size(SSL_DT_I32) == 4 &&
              ssl_dtype_size(SSL_DT_U8) == 1 && ssl_dtype_size((ssl_dtype)99) == 0, "dtype sizes");
    CHECK(strcmp(ssl_dtype_name(SSL_DT_F32), "F32") == 0 &&
              strcmp(ssl_dtype_name(SSL_DT_I64), "I64") == 0 &&
              strcmp(ssl_dtype_name(SSL_DT_U8), "U8") == 0, "dtype names");

    test_json_valid();
    test_json_malformed();
    test_json_write_string();
    test_st_roundtrip();
    test_st_bad();
    test_atomic();
    test_npy();
    test_torch_golden();
    cleanup();
    return check_report("io");
}
