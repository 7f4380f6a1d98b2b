/* Image folders: JPEG (libjpeg-turbo) and PNG (libpng) decoding, torchvision's
 * Resize(size) + CenterCrop(size) with PIL's fixed-point antialiased bilinear
 * filter (bit-exact), the ImageFolder file listing, and a pthread pool that
 * decodes a whole split into one uint8 (n, c, size, size) buffer. */
#define _POSIX_C_SOURCE 200809L
#include "data_internal.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef SSL_HAVE_JPEG
#include <jerror.h>
#include <jpeglib.h>
#endif
#ifdef SSL_HAVE_PNG
#include <png.h>
#endif

/* PIL's decompression-bomb limit: larger images are refused, not decoded. */
#define MAX_PIXELS 178956970LL
#define MAX_FILE_BYTES (1LL << 30)
#define MAX_DEPTH 32 /* folder nesting inside a class (symlink loops end here) */
#define PREC 22      /* PIL's PRECISION_BITS for 8-bit resampling */

void ssl_data_opts_default(ssl_data_opts *o)
{
    memset(o, 0, sizeof *o);
    o->image_size = 64;
    o->channels = 3;
}

/* ---- per-thread work buffers (grow only) ---- */

typedef struct buf {
    void *p;
    size_t cap;
} buf;

static void *buf_get(buf *b, size_t bytes)
{
    if (bytes > b->cap) {
        void *p = realloc(b->p, bytes ? bytes : 1);
        if (!p) return NULL;
        b->p = p;
        b->cap = bytes;
    }
    return b->p;
}

/* The image being decoded goes either through the resampler (size > 0) into
 * dst (c, size, size), or at its own size into a new planar dst (c, h, w). */
typedef struct img_out {
    int c, size;
    int h, w;     /* the image's size, set by out_begin */
    uint8_t *dst;
    int y0, y1;   /* source rows the cropped output needs: [y0, y1) */
    int kx, ky;   /* filter taps per output column / row */
    int *bx, *by; /* (size, 2): first source column / row and count */
    int32_t *wx, *wy; /* (size, kx), (size, ky) fixed-point weights */
    uint8_t *tmp; /* (y1 - y0, size, c): rows after the horizontal pass */
} img_out;

typedef struct img_work {
    buf file, row, crow, full, rows, bx, by, wx, wy, tmp, acc, dk;
    size_t file_len;
} img_work;

static void work_free(img_work *wk)
{
    buf *all[] = {&wk->file, &wk->row, &wk->crow, &wk->full, &wk->rows, &wk->bx,
                  &wk->by, &wk->wx, &wk->wy, &wk->tmp, &wk->acc, &wk->dk};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->p);
    memset(wk, 0, sizeof *wk);
}

/* ---- resampling: PIL's ImagingResample, BILINEAR, 8 bits per channel ---- */

static double triangle(double x)
{
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Coefficients of outputs [first, first + count) of an in_size -> out_size
 * resize (PIL's precompute_coeffs + normalize_coeffs_8bpc): bounds (count, 2),
 * weights (count, ksize). Returns ksize, 0 when out of memory. */
static int coeffs(img_work *wk, buf *bb, buf *bw, int in_size, int out_size, int first,
                  int count, int **bounds, int32_t **weights)
{
    double scale = (double)in_size / out_size;
    double fscale = scale < 1.0 ? 1.0 : scale; /* widen the filter when shrinking */
    double support = fscale;
    int ksize = (int)ceil(support) * 2 + 1;
    int *b = buf_get(bb, sizeof(int) * 2 * (size_t)count);
    int32_t *k = buf_get(bw, sizeof(int32_t) * (size_t)count * ksize);
    double *d = buf_get(&wk->dk, sizeof(double) * (size_t)ksize);
    if (!b || !k || !d) return 0;
    for (int j = 0; j < count; j++) {
        double center = (first + j + 0.5) * scale, ww = 0.0, ss = 1.0 / fscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            d[x] = triangle((x + xmin - center + 0.5) * ss);
            ww += d[x];
        }
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? d[x] / ww : d[x]) : 0.0;
            k[(size_t)j * ksize + x] =
                v < 0 ? (int32_t)(-0.5 + v * (1 << PREC)) : (int32_t)(0.5 + v * (1 << PREC));
        }
        b[2 * j] = xmin;
        b[2 * j + 1] = xmax;
    }
    *bounds = b;
    *weights = k;
    return ksize;
}

static inline uint8_t clip8(int32_t v)
{
    if (v >= (1 << PREC << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PREC);
}

/* torchvision: the shorter side becomes size (the longer one truncated,
 * int(size * long / short)), then a centered size x size window whose
 * offset is round((new - size) / 2) with Python's round half to even. */
static void geometry(int h, int w, int size, int *nh, int *nw, int *top, int *left)
{
    if (w <= h) {
        *nw = size;
        *nh = (int)((double)size * h / w);
    } else {
        *nh = size;
        *nw = (int)((double)size * w / h);
    }
    int d[2] = {*nh - size, *nw - size}, off[2];
    for (int i = 0; i < 2; i++) {
        int half = d[i] / 2;
        off[i] = (d[i] % 2 && half % 2) ? half + 1 : half; /* x.5 -> even */
    }
    *top = off[0];
    *left = off[1];
}

/* Called once the decoder knows the image's size. */
static int out_begin(img_work *wk, img_out *o, int h, int w, const char *path, char *err)
{
    o->h = h;
    o->w = w;
    if (o->size == 0) {
        o->dst = malloc((size_t)o->c * h * w);
        return o->dst ? SSL_OK
                      : ssl_fail(err, SSL_ENOMEM, "%s: out of memory for %dx%d", path, w, h);
    }
    int nh, nw, top, left, s = o->size;
    geometry(h, w, s, &nh, &nw, &top, &left);
    o->kx = coeffs(wk, &wk->bx, &wk->wx, w, nw, left, s, &o->bx, &o->wx);
    o->ky = o->kx ? coeffs(wk, &wk->by, &wk->wy, h, nh, top, s, &o->by, &o->wy) : 0;
    if (!o->ky) return ssl_fail(err, SSL_ENOMEM, "%s: out of memory for resize", path);
    o->y0 = o->by[0];
    o->y1 = o->by[2 * (s - 1)] + o->by[2 * (s - 1) + 1];
    for (int j = 0; j < s; j++) o->by[2 * j] -= o->y0;
    o->tmp = buf_get(&wk->tmp, (size_t)(o->y1 - o->y0) * s * o->c);
    if (!buf_get(&wk->acc, sizeof(int32_t) * (size_t)s * o->c) || !o->tmp)
        return ssl_fail(err, SSL_ENOMEM, "%s: out of memory for resize", path);
    return SSL_OK;
}

/* Source row y, row (w, c) interleaved: the horizontal pass (PIL's first). */
static void out_row(img_out *o, int y, const uint8_t *row)
{
    const int c = o->c, w = o->w;
    if (o->size == 0) {
        for (int ch = 0; ch < c; ch++) {
            uint8_t *d = o->dst + ((size_t)ch * o->h + y) * w;
            for (int x = 0; x < w; x++) d[x] = row[x * c + ch];
        }
        return;
    }
    if (y < o->y0 || y >= o->y1) return;
    uint8_t *t = o->tmp + (size_t)(y - o->y0) * o->size * c;
    for (int j = 0; j < o->size; j++) {
        const int32_t *k = o->wx + (size_t)j * o->kx;
        const uint8_t *s = row + (size_t)o->bx[2 * j] * c;
        const int n = o->bx[2 * j + 1];
        for (int ch = 0; ch < c; ch++) {
            int32_t acc = 1 << (PREC - 1);
            for (int x = 0; x < n; x++) acc += s[x * c + ch] * k[x];
            t[j * c + ch] = clip8(acc);
        }
    }
}

/* The vertical pass, into dst (c, size, size). */
static void out_finish(img_work *wk, img_out *o)
{
    if (o->size == 0) return;
    const int c = o->c, s = o->size, rowlen = s * c;
    int32_t *acc = wk->acc.p; /* (s, c) */
    for (int j = 0; j < s; j++) {
        const int32_t *k = o->wy + (size_t)j * o->ky;
        const uint8_t *t = o->tmp + (size_t)o->by[2 * j] * rowlen;
        for (int i = 0; i < rowlen; i++) acc[i] = 1 << (PREC - 1);
        for (int y = 0; y < o->by[2 * j + 1]; y++)
            for (int i = 0; i < rowlen; i++) acc[i] += t[(size_t)y * rowlen + i] * k[y];
        for (int x = 0; x < s; x++)
            for (int ch = 0; ch < c; ch++)
                o->dst[((size_t)ch * s + j) * s + x] = clip8(acc[x * c + ch]);
    }
}

/* ---- color: a decoded row (nc = 1 gray, 3 RGB, 4 CMYK) to c channels ---- */

#if defined(SSL_HAVE_JPEG) || defined(SSL_HAVE_PNG)

static inline uint8_t gray601(int r, int g, int b)
{
    return (uint8_t)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16); /* PIL's "L" */
}

/* cmyk_inverted: Adobe's inverted CMYK (PIL's "CMYK;I"), converted as PIL's
 * cmyk2rgb does. */
static void row_convert(uint8_t *dst, const uint8_t *src, int w, int nc, int c, int cmyk_inverted)
{
    for (int x = 0; x < w; x++) {
        const uint8_t *p = src + (size_t)x * nc;
        int r, g, b;
        if (nc == 1) {
            r = g = b = p[0];
        } else if (nc == 3) {
            r = p[0];
            g = p[1];
            b = p[2];
        } else {
            int cc[4];
            for (int i = 0; i < 4; i++) cc[i] = cmyk_inverted ? 255 - p[i] : p[i];
            int nk = 255 - cc[3], rgb[3];
            for (int i = 0; i < 3; i++) {
                int t = cc[i] * nk + 128;
                int v = nk - (((t >> 8) + t) >> 8);
                rgb[i] = v < 0 ? 0 : v;
            }
            r = rgb[0];
            g = rgb[1];
            b = rgb[2];
        }
        if (c == 3) {
            dst[3 * x] = (uint8_t)r;
            dst[3 * x + 1] = (uint8_t)g;
            dst[3 * x + 2] = (uint8_t)b;
        } else {
            dst[x] = nc == 1 ? (uint8_t)r : gray601(r, g, b);
        }
    }
}

static int check_size(const char *path, const char *fmt, long long w, long long h, char *err)
{
    if (w <= 0 || h <= 0)
        return ssl_fail(err, SSL_EFORMAT, "%s: corrupt %s: image size %lldx%lld", path, fmt, w, h);
    if (w * h > MAX_PIXELS)
        return ssl_fail(err, SSL_EFORMAT, "%s: %s of %lldx%lld pixels is over the limit of %lld",
                        path, fmt, w, h, MAX_PIXELS);
    return SSL_OK;
}
#endif

/* ---- JPEG ---- */

#ifdef SSL_HAVE_JPEG
typedef struct jpeg_fail {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    int truncated;
    char msg[JMSG_LENGTH_MAX];
} jpeg_fail;

/* libjpeg's default error_exit calls exit(): come back here instead. */
static void jpeg_on_error(j_common_ptr ci)
{
    jpeg_fail *f = (jpeg_fail *)ci->err;
    f->pub.format_message(ci, f->msg);
    longjmp(f->jb, 1);
}

/* Warnings (corrupt entropy data and the like) are ignored, as PIL does, except
 * the end of data before the image's end: PIL refuses truncated files too. */
static void jpeg_on_message(j_common_ptr ci, int level)
{
    jpeg_fail *f = (jpeg_fail *)ci->err;
    if (level < 0 && ci->err->msg_code == JWRN_JPEG_EOF) {
        f->truncated = 1;
        longjmp(f->jb, 1);
    }
}

static int decode_jpeg(img_work *wk, const char *path, img_out *o, char *err)
{
    struct jpeg_decompress_struct ci;
    jpeg_fail jf;
    memset(&jf, 0, sizeof jf);
    ci.err = jpeg_std_error(&jf.pub);
    jf.pub.error_exit = jpeg_on_error;
    jf.pub.emit_message = jpeg_on_message;
    jpeg_create_decompress(&ci);
    if (setjmp(jf.jb)) {
        jpeg_destroy_decompress(&ci);
        if (jf.truncated)
            return ssl_fail(err, SSL_EFORMAT, "%s: truncated JPEG (the data ends before the image)",
                            path);
        return ssl_fail(err, SSL_EFORMAT, "%s: corrupt JPEG (%s)", path, jf.msg);
    }
    jpeg_mem_src(&ci, wk->file.p, (unsigned long)wk->file_len);
    jpeg_read_header(&ci, TRUE);
    int nc = 3, rc = check_size(path, "JPEG", ci.image_width, ci.image_height, err);
    if (rc) goto done;
    if (ci.jpeg_color_space == JCS_GRAYSCALE) {
        ci.out_color_space = JCS_GRAYSCALE;
        nc = 1;
    } else if (ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK) {
        ci.out_color_space = JCS_CMYK; /* libjpeg has no CMYK -> RGB */
        nc = 4;
    } else {
        ci.out_color_space = JCS_RGB;
    }
    jpeg_start_decompress(&ci);
    const int w = (int)ci.output_width, h = (int)ci.output_height;
    if (ci.output_components != nc) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: JPEG with %d components unsupported", path,
                      ci.output_components);
        goto done;
    }
    uint8_t *row = buf_get(&wk->row, (size_t)w * nc), *crow = buf_get(&wk->crow, (size_t)w * 3);
    if (!row || !crow) {
        rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    if ((rc = out_begin(wk, o, h, w, path, err))) goto done;
    while (ci.output_scanline < ci.output_height) {
        int y = (int)ci.output_scanline;
        JSAMPROW r = row;
        if (jpeg_read_scanlines(&ci, &r, 1) != 1) break; /* mem_src never suspends */
        row_convert(crow, row, w, nc, o->c, nc == 4 && ci.saw_Adobe_marker);
        out_row(o, y, crow);
    }
    jpeg_finish_decompress(&ci);
done:
    jpeg_destroy_decompress(&ci);
    return rc;
}
#endif

/* ---- PNG ---- */

#ifdef SSL_HAVE_PNG
typedef struct png_state {
    jmp_buf jb;
    const uint8_t *data;
    size_t n, at;
    int truncated;
    char msg[200];
} png_state;

/* libpng must not return from its error function: longjmp back. */
static void png_on_error(png_structp png, png_const_charp msg)
{
    png_state *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    longjmp(s->jb, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png; /* ancillary-chunk trouble: the pixels are fine, as for PIL */
    (void)msg;
}

static void png_read_mem(png_structp png, png_bytep out, png_size_t len)
{
    png_state *s = png_get_io_ptr(png);
    if (len > s->n - s->at) {
        s->truncated = 1;
        png_error(png, "file ends early");
    }
    memcpy(out, s->data + s->at, len);
    s->at += len;
}

static int decode_png(img_work *wk, const char *path, img_out *o, char *err)
{
    png_state st;
    memset(&st, 0, sizeof st);
    st.data = wk->file.p;
    st.n = wk->file_len;
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
        return ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
    }
    if (setjmp(st.jb)) {
        png_destroy_read_struct(&png, &info, NULL);
        if (st.truncated)
            return ssl_fail(err, SSL_EFORMAT, "%s: truncated PNG (the file ends before the image)",
                            path);
        return ssl_fail(err, SSL_EFORMAT, "%s: corrupt PNG (%s)", path, st.msg);
    }
    png_set_read_fn(png, &st, png_read_mem);
    png_read_info(png, info);
    int rc = check_size(path, "PNG", png_get_image_width(png, info),
                        png_get_image_height(png, info), err);
    if (rc) goto done;
    const int w = (int)png_get_image_width(png, info), h = (int)png_get_image_height(png, info);
    int type = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png); /* + alpha from tRNS */
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png); /* the high byte, like PIL's RGB;16B */
    png_set_strip_alpha(png);               /* PIL's convert("RGB") drops it too */
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const int nc = png_get_channels(png, info);
    if ((nc != 1 && nc != 3) || png_get_rowbytes(png, info) != (size_t)w * nc) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: PNG layout unsupported (%d channels)", path, nc);
        goto done;
    }
    uint8_t *crow = buf_get(&wk->crow, (size_t)w * 3);
    /* Interlaced images arrive in 7 passes over the whole image, others row by row. */
    uint8_t *pix =
        buf_get(passes > 1 ? &wk->full : &wk->row, (size_t)w * nc * (passes > 1 ? h : 1));
    png_bytep *rows = passes > 1 ? buf_get(&wk->rows, sizeof(png_bytep) * (size_t)h) : NULL;
    if (!crow || !pix || (passes > 1 && !rows)) {
        rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    if ((rc = out_begin(wk, o, h, w, path, err))) goto done;
    if (passes > 1) {
        for (int y = 0; y < h; y++) rows[y] = pix + (size_t)y * w * nc;
        png_read_image(png, rows);
    }
    for (int y = 0; y < h; y++) {
        const uint8_t *r = pix + (passes > 1 ? (size_t)y * w * nc : 0);
        if (passes == 1) png_read_row(png, pix, NULL);
        row_convert(crow, r, w, nc, o->c, 0);
        out_row(o, y, crow);
    }
done:
    png_destroy_read_struct(&png, &info, NULL);
    return rc;
}
#endif

/* ---- one file ---- */

/* Errors the skip option does not cover: the build or the machine, not the file. */
#define HARD_ERROR(rc) ((rc) == SSL_ENOMEM || (rc) == SSL_EDEVICE)

static int read_file(img_work *wk, const char *path, char *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        char why[128] = "unknown error"; /* strerror is not thread-safe, this runs on workers */
        (void)!strerror_r(errno, why, sizeof why);
        return ssl_fail(err, SSL_EIO, "%s: cannot open (%s)", path, why);
    }
    struct stat st;
    int rc = SSL_OK;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = ssl_fail(err, SSL_EIO, "%s: not a regular file", path);
    } else if (st.st_size == 0) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: empty file", path);
    } else if (st.st_size > MAX_FILE_BYTES) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: %lld bytes, over the 1 GiB limit for an image", path,
                      (long long)st.st_size);
    } else if (!buf_get(&wk->file, (size_t)st.st_size)) {
        rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory", path);
    } else {
        wk->file_len = fread(wk->file.p, 1, (size_t)st.st_size, f);
        if (wk->file_len != (size_t)st.st_size)
            rc = ssl_fail(err, SSL_EIO, "%s: short read", path);
    }
    fclose(f);
    return rc;
}

/* Formats named by their first bytes, for the message. */
static const char *other_format(const uint8_t *p, size_t n)
{
    if (n >= 2 && p[0] == 'B' && p[1] == 'M') return " (a BMP image)";
    if (n >= 4 && !memcmp(p, "GIF8", 4)) return " (a GIF image)";
    if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return " (a WebP image)";
    if (n >= 4 && (!memcmp(p, "II*\0", 4) || !memcmp(p, "MM\0*", 4))) return " (a TIFF image)";
    if (n >= 2 && p[0] == 'P' && p[1] >= '1' && p[1] <= '6') return " (a PNM image)";
    return "";
}

static int decode_file(img_work *wk, const char *path, img_out *o, char *err)
{
    int rc = read_file(wk, path, err);
    if (rc) return rc;
    const uint8_t *p = wk->file.p;
    size_t n = wk->file_len;
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) {
#ifdef SSL_HAVE_JPEG
        rc = decode_jpeg(wk, path, o, err);
#else
        return ssl_fail(err, SSL_EDEVICE,
                        "%s: selfsup was built without JPEG support (install libjpeg62-turbo-dev "
                        "and rebuild)", path);
#endif
    } else if (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) {
#ifdef SSL_HAVE_PNG
        rc = decode_png(wk, path, o, err);
#else
        return ssl_fail(err, SSL_EDEVICE,
                        "%s: selfsup was built without PNG support (install libpng-dev and "
                        "rebuild)", path);
#endif
    } else {
        char hex[40] = "";
        for (size_t i = 0, at = 0; i < n && i < 8; i++)
            at += (size_t)snprintf(hex + at, sizeof hex - at, "%s%02x", i ? " " : "", p[i]);
        return ssl_fail(err, SSL_EFORMAT, "%s: not a JPEG or PNG file%s (starts with %s)", path,
                        other_format(p, n), hex);
    }
    if (!rc) out_finish(wk, o);
    return rc;
}

static int bad_channels(int c, char *err)
{
    if (c == 1 || c == 3) return 0;
    return ssl_fail(err, SSL_EINVAL, "image channels must be 1 or 3, not %d", c);
}

int ssl_image_decode(const char *path, int channels, uint8_t **pixels, int *h, int *w, char *err)
{
    *pixels = NULL;
    if (bad_channels(channels, err)) return SSL_EINVAL;
    img_work wk;
    memset(&wk, 0, sizeof wk);
    img_out o = {.c = channels};
    int rc = decode_file(&wk, path, &o, err);
    work_free(&wk);
    if (rc) {
        free(o.dst);
        return rc;
    }
    *pixels = o.dst;
    *h = o.h;
    *w = o.w;
    return SSL_OK;
}

int ssl_image_load(const char *path, int channels, int size, uint8_t *out, char *err)
{
    if (bad_channels(channels, err)) return SSL_EINVAL;
    if (size < 1) return ssl_fail(err, SSL_EINVAL, "image size must be >= 1, not %d", size);
    img_work wk;
    memset(&wk, 0, sizeof wk);
    img_out o = {.c = channels, .size = size, .dst = out};
    int rc = decode_file(&wk, path, &o, err);
    work_free(&wk);
    return rc;
}

int ssl_image_resize_crop(const uint8_t *src, int c, int h, int w, int size, uint8_t *dst)
{
    char err[SSL_ERR_LEN];
    if (c < 1 || c > 3 || h < 1 || w < 1 || size < 1) return SSL_EINVAL;
    img_work wk;
    memset(&wk, 0, sizeof wk);
    img_out o = {.c = c, .size = size, .dst = dst};
    uint8_t *row = buf_get(&wk.row, (size_t)w * c);
    int rc = row ? out_begin(&wk, &o, h, w, "resize", err) : SSL_ENOMEM;
    for (int y = 0; !rc && y < h; y++) {
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < c; ch++) row[x * c + ch] = src[((size_t)ch * h + y) * w + x];
        out_row(&o, y, row);
    }
    if (!rc) out_finish(&wk, &o);
    work_free(&wk);
    return rc;
}

/* ---- listing ---- */

typedef struct strvec {
    char **v;
    int n, cap;
} strvec;

static int sv_push(strvec *s, const char *str)
{
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        char **v = realloc(s->v, sizeof *v * (size_t)cap);
        if (!v) return SSL_ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(str))) return SSL_ENOMEM;
    s->n++;
    return SSL_OK;
}

static void sv_free(strvec *s)
{
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b); /* bytes: Python's code-point order */
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* 2: decoded here (.jpg .jpeg .png), 1: another of torchvision's
 * IMG_EXTENSIONS (listed as it does, then fails or is skipped loudly),
 * 0: ignored. */
static int image_kind(const char *name)
{
    static const char *const ours[] = {".jpg", ".jpeg", ".png"};
    static const char *const others[] = {".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp"};
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
        if (!strcasecmp(dot, ours[i])) return 2;
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        if (!strcasecmp(dot, others[i])) return 1;
    return 0;
}

/* Entries of dir (names starting with '.' left out): subfolders into dirs,
 * image files into files, both as full paths, sorted. Either may be NULL. */
static int list_dir(const char *dir, strvec *dirs, strvec *files, char *err)
{
    DIR *d = opendir(dir);
    if (!d) return ssl_fail(err, SSL_EIO, "%s: cannot open folder (%s)", dir, strerror(errno));
    int rc = SSL_OK, d0 = dirs ? dirs->n : 0, f0 = files ? files->n : 0;
    struct dirent *e;
    char p[4096];
    while (!rc && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p) {
            rc = ssl_fail(err, SSL_EINVAL, "%.200s/...: path too long", dir);
            break;
        }
        if (is_dir(p)) {
            if (dirs) rc = sv_push(dirs, p);
        } else if (files && image_kind(e->d_name)) {
            rc = sv_push(files, p);
        }
    }
    closedir(d);
    if (rc == SSL_ENOMEM) return ssl_fail(err, rc, "%s: out of memory listing files", dir);
    if (dirs && dirs->n > d0) qsort(dirs->v + d0, (size_t)(dirs->n - d0), sizeof(char *), cmp_str);
    if (files && files->n > f0)
        qsort(files->v + f0, (size_t)(files->n - f0), sizeof(char *), cmp_str);
    return rc;
}

/* Image files under dir, recursively, in the order of torchvision's
 * sorted(os.walk(dir)): folders by full path, files by name in each. */
static int walk(const char *dir, strvec *files, char *err)
{
    strvec dirs = {0};
    int rc = sv_push(&dirs, dir) ? ssl_fail(err, SSL_ENOMEM, "%s: out of memory", dir) : SSL_OK;
    /* breadth first, one nesting level at a time: [start, end) is the level */
    for (int depth = 0, start = 0; !rc && start < dirs.n && depth < MAX_DEPTH; depth++) {
        int end = dirs.n;
        for (int i = start; !rc && i < end; i++) rc = list_dir(dirs.v[i], &dirs, NULL, err);
        start = end;
    }
    if (!rc) qsort(dirs.v, (size_t)dirs.n, sizeof(char *), cmp_str);
    for (int i = 0; !rc && i < dirs.n; i++) rc = list_dir(dirs.v[i], NULL, files, err);
    sv_free(&dirs);
    return rc;
}

void ssl_imagefolder_free(ssl_imagefolder *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->paths[i]);
    for (int i = 0; i < f->n_classes; i++) free(f->classes[i]);
    free(f->paths);
    free(f->classes);
    free(f->labels);
    memset(f, 0, sizeof *f);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* 1 when sorted position i of a class falls in the asked part of the hold-out
 * (test 1: the held-out part); any frac spreads the test files evenly. */
static int holdout_keep(int i, float frac, int test)
{
    int in_test = (long long)floor((double)(i + 1) * frac) > (long long)floor((double)i * frac);
    return in_test == test;
}

int ssl_imagefolder_scan(ssl_imagefolder *f, const char *dir, int train, const ssl_data_opts *opts,
                         char *err)
{
    memset(f, 0, sizeof *f);
    ssl_data_opts def;
    if (!opts) ssl_data_opts_default(&def);
    const ssl_data_opts *o = opts ? opts : &def;
    if (!(o->holdout >= 0 && o->holdout < 1))
        return ssl_fail(err, SSL_EINVAL, "hold-out fraction %g not in [0, 1)", o->holdout);
    if (!is_dir(dir)) return ssl_fail(err, SSL_EIO, "%s: no such folder", dir);
    char tr[1024], te[1024];
    const char *test_dir = NULL;
    snprintf(tr, sizeof tr, "%s/train", dir);
    if (is_dir(tr)) {
        snprintf(te, sizeof te, "%s/val", dir);
        if (!is_dir(te)) snprintf(te, sizeof te, "%s/test", dir);
        if (is_dir(te)) test_dir = te;
    } else {
        snprintf(tr, sizeof tr, "%s", dir);
    }
    if (test_dir && o->holdout > 0)
        return ssl_fail(err, SSL_EINVAL, "%s: has its own test split (%s), drop the hold-out",
                        dir, test_dir);
    if (!train && !test_dir && o->holdout <= 0)
        return ssl_fail(err, SSL_EINVAL,
                        "%s: no test split: no train/ with val/ or test/ beside it, and no "
                        "hold-out asked for (holdout=F in the spec, --holdout F)", dir);
    const char *split = train || !test_dir ? tr : test_dir;
    const int held = !test_dir && o->holdout > 0; /* the split is a part of tr */
    snprintf(f->root, sizeof f->root, "%.480s%s", split,
             !held ? "" : train ? " (hold-out train part)" : " (hold-out test part)");

    strvec classes = {0}, split_dirs = {0}, files = {0};
    int32_t *labels = NULL;
    int rc = list_dir(tr, &classes, NULL, err);
    if (!rc && split != tr) rc = list_dir(split, &split_dirs, NULL, err);
    if (rc) goto fail;
    if (split != tr && (classes.n > 0) != (split_dirs.n > 0)) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s and %s: one has class subfolders, the other not",
                      tr, split);
        goto fail;
    }
    for (int i = 0; i < split_dirs.n; i++) { /* val/ classes must be train/'s */
        const char *name = base_name(split_dirs.v[i]);
        int found = 0;
        for (int k = 0; k < classes.n && !found; k++)
            found = !strcmp(base_name(classes.v[k]), name);
        if (!found) {
            rc = ssl_fail(err, SSL_EFORMAT, "%s: class '%s' is not a class folder of %s", split,
                          name, tr);
            goto fail;
        }
    }
    if (classes.n == 0) { /* flat */
        if ((rc = list_dir(split, NULL, &files, err))) goto fail;
        if (held) {
            int k = 0;
            for (int i = 0; i < files.n; i++) {
                if (holdout_keep(i, o->holdout, !train)) files.v[k++] = files.v[i];
                else free(files.v[i]);
            }
            files.n = k;
        }
    } else {
        for (int c = 0; c < classes.n; c++) {
            char cdir[4096];
            snprintf(cdir, sizeof cdir, "%s/%s", split, base_name(classes.v[c]));
            if (split != tr && !is_dir(cdir)) continue; /* a class val/ does not have */
            int first = files.n;
            if ((rc = walk(cdir, &files, err))) goto fail;
            if (files.n == first) {
                rc = ssl_fail(err, SSL_EFORMAT,
                              "%s: class folder without images (.jpg, .jpeg, .png)", cdir);
                goto fail;
            }
            int k = first;
            for (int i = first; i < files.n; i++) {
                if (!held || holdout_keep(i - first, o->holdout, !train)) files.v[k++] = files.v[i];
                else free(files.v[i]);
            }
            files.n = k;
            int32_t *nl = realloc(labels, sizeof(int32_t) * (size_t)(files.n ? files.n : 1));
            if (!nl) {
                rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory", dir);
                goto fail;
            }
            labels = nl;
            for (int i = first; i < files.n; i++) labels[i] = c;
        }
    }
    if (files.n == 0) {
        rc = ssl_fail(err, SSL_EIO, "%s: no images (.jpg, .jpeg, .png)", f->root);
        goto fail;
    }
    f->n = files.n;
    f->paths = files.v;
    f->labels = classes.n ? labels : NULL;
    f->n_classes = classes.n;
    f->classes = classes.v;
    for (int c = 0; c < classes.n; c++) /* keep the names only */
        memmove(classes.v[c], base_name(classes.v[c]), strlen(base_name(classes.v[c])) + 1);
    if (!classes.n) {
        free(classes.v);
        f->classes = NULL;
    }
    sv_free(&split_dirs);
    return SSL_OK;
fail:
    sv_free(&classes);
    sv_free(&split_dirs);
    sv_free(&files);
    free(labels);
    memset(f, 0, sizeof *f);
    return rc;
}

/* ---- the decoding pool ---- */

typedef struct pool {
    const ssl_imagefolder *list;
    int c, size, skip_bad;
    uint8_t *images; /* (n, c, size, size) */
    char **msgs;     /* (n): the error of a file that failed, else NULL */
    int *rcs;        /* (n) */
    atomic_int next; /* next file to claim: files are claimed in order */
    atomic_int stop;
} pool;

static void *pool_worker(void *arg)
{
    pool *p = arg;
    img_work wk;
    memset(&wk, 0, sizeof wk);
    const size_t img = (size_t)p->c * p->size * p->size;
    char err[SSL_ERR_LEN];
    for (;;) {
        /* Once a file failed nobody claims more; every file before it was claimed
         * already and gets finished, so the first failure in file order is found
         * whatever the number of threads. */
        if (atomic_load(&p->stop)) break;
        int i = atomic_fetch_add(&p->next, 1);
        if (i >= p->list->n) break;
        img_out o = {.c = p->c, .size = p->size, .dst = p->images + (size_t)i * img};
        int rc = decode_file(&wk, p->list->paths[i], &o, err);
        if (rc) {
            p->rcs[i] = rc;
            p->msgs[i] = strdup(err);
            if (!p->skip_bad || HARD_ERROR(rc) || !p->msgs[i]) atomic_store(&p->stop, 1);
        }
    }
    work_free(&wk);
    return NULL;
}

int ssl_imagefolder_load(ssl_dataset *ds, const char *dir, int train, const ssl_data_opts *opts,
                         char *err)
{
    memset(ds, 0, sizeof *ds);
    ssl_data_opts def;
    if (!opts) ssl_data_opts_default(&def);
    const ssl_data_opts *o = opts ? opts : &def;
    if (bad_channels(o->channels, err)) return SSL_EINVAL;
    if (o->image_size < 1 || o->image_size > 4096)
        return ssl_fail(err, SSL_EINVAL, "image size %d not in [1, 4096]", o->image_size);
#if !defined(SSL_HAVE_JPEG) && !defined(SSL_HAVE_PNG)
    return ssl_fail(err, SSL_EDEVICE, "%s: selfsup was built without JPEG and PNG support "
                    "(install libjpeg62-turbo-dev and libpng-dev, then rebuild)", dir);
#endif
    ssl_imagefolder list;
    int rc = ssl_imagefolder_scan(&list, dir, train, o, err);
    if (rc) return rc;
    const size_t img = (size_t)o->channels * o->image_size * o->image_size;
    pool p = {.list = &list, .c = o->channels, .size = o->image_size, .skip_bad = o->skip_bad};
    atomic_init(&p.next, 0);
    atomic_init(&p.stop, 0);
    p.images = malloc(img * (size_t)list.n);
    p.msgs = calloc((size_t)list.n, sizeof(char *));
    p.rcs = calloc((size_t)list.n, sizeof(int));
    if (!p.images || !p.msgs || !p.rcs) {
        rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory for %d images of %dx%dx%d", dir, list.n,
                      o->channels, o->image_size, o->image_size);
        goto done;
    }
    long nt = o->n_threads > 0 ? o->n_threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (nt < 1) nt = 1;
    if (nt > 64) nt = 64;
    if (nt > list.n) nt = list.n;
    pthread_t th[64];
    int started = 0;
    for (long t = 1; t < nt; t++) /* the caller is worker 0 */
        if (pthread_create(&th[started], NULL, pool_worker, &p) == 0) started++;
    pool_worker(&p);
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);

    int n_ok = 0, first_bad = -1;
    for (int i = 0; i < list.n; i++) {
        if (!p.rcs[i]) continue;
        if (first_bad < 0) first_bad = i;
        if (!p.skip_bad || HARD_ERROR(p.rcs[i]) || !p.msgs[i]) {
            rc = p.msgs[i] ? ssl_fail(err, p.rcs[i], "%s", p.msgs[i])
                           : ssl_fail(err, SSL_ENOMEM, "%s: out of memory", list.paths[i]);
            goto done;
        }
    }
    for (int i = 0; i < list.n; i++) { /* skip mode: warn in file order, compact */
        if (p.rcs[i]) {
            fprintf(stderr, "selfsup: warning: skipped %s\n", p.msgs[i]);
            continue;
        }
        if (n_ok != i) {
            memmove(p.images + (size_t)n_ok * img, p.images + (size_t)i * img, img);
            if (list.labels) list.labels[n_ok] = list.labels[i];
        }
        n_ok++;
    }
    if (n_ok == 0) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: none of the %d images could be decoded (first: %s)",
                      list.root, list.n, p.msgs[first_bad]);
        goto done;
    }
    ds->n = n_ok;
    ds->c = o->channels;
    ds->h = ds->w = o->image_size;
    ds->images = p.images;
    ds->labels = list.labels;
    ds->n_classes = list.n_classes;
    snprintf(ds->source, sizeof ds->source, "%s", list.root);
    p.images = NULL;
    list.labels = NULL;
    if (n_ok < list.n) { /* give back what the skipped files held */
        uint8_t *shrunk = realloc(ds->images, img * (size_t)n_ok);
        if (shrunk) ds->images = shrunk;
    }
done:
    for (int i = 0; p.msgs && i < list.n; i++) free(p.msgs[i]);
    free(p.msgs);
    free(p.rcs);
    free(p.images);
    ssl_imagefolder_free(&list);
    return rc;
}
