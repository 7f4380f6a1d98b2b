/* A small strict JSON reader (RFC 8259) and a string-literal writer.
 * The reader never looks past `len`, limits nesting depth (recursion) and the
 * number of values (memory), so hostile input gives an error, not a crash. */
#include "selfsup/core.h"
#include "selfsup/io.h"

#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64
/* Each value costs one ssl_json (~56 bytes); this bounds a header's tree to
 * ~120 MB whatever its text, far above any real checkpoint header. */
#define JSON_MAX_VALUES (1 << 21)
#define JSON_MAX_NUMBER_LEN 64

typedef struct parser {
    const char *s;
    size_t len, pos;
    long n_values;
    char *err;
} parser;

static int perr(parser *p, const char *what)
{
    return ssl_fail(p->err, SSL_EFORMAT, "json: %s at byte %zu", what, p->pos);
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Matches a literal such as "true"; advances only on success. */
static int match(parser *p, const char *lit)
{
    size_t n = strlen(lit);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, lit, n) != 0) return 0;
    p->pos += n;
    return 1;
}

static int hex4(parser *p, unsigned *out)
{
    if (p->len - p->pos < 4) return perr(p, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos + i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return perr(p, "bad hex digit in \\u escape");
    }
    p->pos += 4;
    *out = v;
    return SSL_OK;
}

/* Writes code point cp as UTF-8 into o (room for 4 bytes); returns bytes. */
static int put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a string literal starting at the opening quote into a malloc'ed,
 * NUL-terminated copy. Unescaped output is never longer than the input
 * (a 6-byte \uXXXX gives at most 3 bytes, a 12-byte pair gives 4). */
static int parse_string(parser *p, char **out)
{
    p->pos++; /* opening quote */
    size_t start = p->pos, end = start;
    while (end < p->len && p->s[end] != '"') end += (p->s[end] == '\\') ? 2 : 1;
    if (end >= p->len) return perr(p, "unterminated string");
    char *buf = malloc(end - start + 1);
    if (!buf) return ssl_fail(p->err, SSL_ENOMEM, "json: out of memory");
    size_t o = 0;
    int rc = SSL_OK;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) { rc = perr(p, "control character in string"); break; }
        if (c != '\\') { buf[o++] = (char)c; p->pos++; continue; }
        char e = p->s[p->pos + 1]; /* end points at '"', so pos+1 < len */
        p->pos += 2;
        switch (e) {
        case '"': buf[o++] = '"'; break;
        case '\\': buf[o++] = '\\'; break;
        case '/': buf[o++] = '/'; break;
        case 'b': buf[o++] = '\b'; break;
        case 'f': buf[o++] = '\f'; break;
        case 'n': buf[o++] = '\n'; break;
        case 'r': buf[o++] = '\r'; break;
        case 't': buf[o++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if ((rc = hex4(p, &cp)) != SSL_OK) break;
            if (cp >= 0xDC00 && cp <= 0xDFFF) { rc = perr(p, "lone low surrogate"); break; }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (!match(p, "\\u")) { rc = perr(p, "high surrogate without low surrogate"); break; }
                if ((rc = hex4(p, &lo)) != SSL_OK) break;
                if (lo < 0xDC00 || lo > 0xDFFF) { rc = perr(p, "bad low surrogate"); break; }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            /* Strings are NUL-terminated, so an embedded NUL would silently cut them. */
            if (cp == 0) { rc = perr(p, "\\u0000 in string is not supported"); break; }
            o += (size_t)put_utf8(buf + o, cp);
            break;
        }
        default: rc = perr(p, "bad escape in string");
        }
        if (rc != SSL_OK) break;
        if (p->pos > end) { rc = perr(p, "escape runs past end of string"); break; }
    }
    if (rc != SSL_OK) { free(buf); return rc; }
    buf[o] = '\0';
    p->pos = end + 1;
    *out = buf;
    return SSL_OK;
}

static int parse_number(parser *p, double *out)
{
    size_t st = p->pos, i = st;
    const char *s = p->s;
    if (i < p->len && s[i] == '-') i++;
    if (i < p->len && s[i] == '0') i++;
    else if (i < p->len && s[i] >= '1' && s[i] <= '9')
        while (i < p->len && s[i] >= '0' && s[i] <= '9') i++;
    else return perr(p, "bad number");
    if (i < p->len && s[i] == '.') {
        i++;
        if (!(i < p->len && s[i] >= '0' && s[i] <= '9')) return perr(p, "bad fraction");
        while (i < p->len && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (!(i < p->len && s[i] >= '0' && s[i] <= '9')) return perr(p, "bad exponent");
        while (i < p->len && s[i] >= '0' && s[i] <= '9') i++;
    }
    /* strtod needs a NUL-terminated copy: the input may not be terminated. */
    char tmp[JSON_MAX_NUMBER_LEN + 1];
    if (i - st > JSON_MAX_NUMBER_LEN) return perr(p, "number too long");
    memcpy(tmp, s + st, i - st);
    tmp[i - st] = '\0';
    *out = strtod(tmp, NULL);
    p->pos = i;
    return SSL_OK;
}

static int parse_value(parser *p, ssl_json *v, int depth);

/* Appends a zeroed child to v->items, growing geometrically; *cap is local. */
static ssl_json *push_child(parser *p, ssl_json *v, int *cap)
{
    if (v->n == *cap) {
        int nc = *cap ? *cap * 2 : 4;
        ssl_json *ni = realloc(v->items, (size_t)nc * sizeof *ni);
        if (!ni) {
            ssl_fail(p->err, SSL_ENOMEM, "json: out of memory");
            return NULL;
        }
        v->items = ni;
        *cap = nc;
    }
    ssl_json *c = &v->items[v->n++];
    memset(c, 0, sizeof *c);
    return c;
}

static int parse_container(parser *p, ssl_json *v, int depth, int is_object)
{
    char close = is_object ? '}' : ']';
    int cap = 0, rc;
    v->type = is_object ? SSL_JSON_OBJECT : SSL_JSON_ARRAY;
    p->pos++; /* opening bracket */
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; return SSL_OK; }
    for (;;) {
        ssl_json *c = push_child(p, v, &cap);
        if (!c) return SSL_ENOMEM;
        skip_ws(p);
        if (is_object) {
            if (p->pos >= p->len || p->s[p->pos] != '"') return perr(p, "expected member name");
            if ((rc = parse_string(p, &c->key)) != SSL_OK) return rc;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') return perr(p, "expected ':'");
            p->pos++;
        }
        if ((rc = parse_value(p, c, depth + 1)) != SSL_OK) return rc;
        skip_ws(p);
        if (p->pos >= p->len) return perr(p, is_object ? "unterminated object" : "unterminated array");
        if (p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->s[p->pos] == close) { p->pos++; return SSL_OK; }
        return perr(p, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

/* On error v may be partly filled; the caller frees the whole tree. */
static int parse_value(parser *p, ssl_json *v, int depth)
{
    if (depth > JSON_MAX_DEPTH) return perr(p, "nesting too deep");
    if (++p->n_values > JSON_MAX_VALUES) return perr(p, "too many values");
    skip_ws(p);
    if (p->pos >= p->len) return perr(p, "unexpected end of input");
    char c = p->s[p->pos];
    switch (c) {
    case '{': return parse_container(p, v, depth, 1);
    case '[': return parse_container(p, v, depth, 0);
    case '"': v->type = SSL_JSON_STRING; return parse_string(p, &v->str);
    case 't':
        if (!match(p, "true")) break;
        v->type = SSL_JSON_BOOL; v->num = 1; return SSL_OK;
    case 'f':
        if (!match(p, "false")) break;
        v->type = SSL_JSON_BOOL; v->num = 0; return SSL_OK;
    case 'n':
        if (!match(p, "null")) break;
        v->type = SSL_JSON_NULL; return SSL_OK;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            v->type = SSL_JSON_NUMBER;
            return parse_number(p, &v->num);
        }
    }
    return perr(p, "unexpected character");
}

int ssl_json_parse(ssl_json *out, const char *text, size_t len, char *err)
{
    memset(out, 0, sizeof *out);
    if (!text && len) return ssl_fail(err, SSL_EINVAL, "json: NULL text");
    parser p = { text, len, 0, 0, err };
    int rc = parse_value(&p, out, 0);
    if (rc == SSL_OK) {
        skip_ws(&p);
        if (p.pos != p.len) rc = perr(&p, "trailing characters after value");
    }
    if (rc != SSL_OK) ssl_json_free(out);
    return rc;
}

const ssl_json *ssl_json_get(const ssl_json *obj, const char *key)
{
    if (!obj || obj->type != SSL_JSON_OBJECT || !key) return NULL;
    for (int i = 0; i < obj->n; i++)
        if (obj->items[i].key && strcmp(obj->items[i].key, key) == 0) return &obj->items[i];
    return NULL;
}

static void json_free_children(ssl_json *j)
{
    for (int i = 0; i < j->n; i++) {
        json_free_children(&j->items[i]);
        free(j->items[i].key);
        free(j->items[i].str);
    }
    free(j->items);
}

/* Frees what j owns (not j itself, nor j->key, which its parent owns) and
 * leaves it an empty NULL value. Depth is bounded by the parser's limit. */
void ssl_json_free(ssl_json *j)
{
    if (!j) return;
    json_free_children(j);
    free(j->str);
    char *key = j->key;
    memset(j, 0, sizeof *j);
    j->key = key;
}

void ssl_json_write_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c; c++) {
        switch (*c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (*c < 0x20) fprintf(f, "\\u%04x", *c);
            else fputc(*c, f); /* UTF-8 passes through unchanged */
        }
    }
    fputc('"', f);
}
