/* Image folders: JPEG / PNG decoding of generated edge cases (every PNG color
 * type and depth, interlacing, gray / progressive / CMYK JPEG), resize + center
 * crop against torchvision's Resize + CenterCrop on PIL (via /usr/bin/python3)
 * and an independent float reference, the ImageFolder listing against
 * torchvision's, splits and hold-out, bad files (error naming the file, or
 * skipped with a warning), thread-count independence, and the real photos of
 * python3-sklearn when present. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/data.h"

#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef SSL_HAVE_JPEG
#include <jpeglib.h>
#endif
#ifdef SSL_HAVE_PNG
#include <png.h>
#endif

#include "check.h"

/* The decoding checks need both decoders (to write the files, too). */
#if defined(SSL_HAVE_JPEG) && defined(SSL_HAVE_PNG)
#define TEST_DECODERS 1
#endif

static char tmpdir[256];

static int has(const char *s, const char *a, const char *b)
{
    return s && strstr(s, a) && (!b || strstr(s, b));
}

static void path_of(char *out, const char *rel)
{
    snprintf(out, 600, "%s/%s", tmpdir, rel);
}

/* mkdir -p of tmpdir/rel */
static void make_dirs(const char *rel)
{
    char p[600];
    path_of(p, rel);
    for (char *s = p + strlen(tmpdir) + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    mkdir(p, 0755);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

#ifdef TEST_DECODERS
/* The whole file, with a 0 byte after it; NULL (and *n 0) if it cannot be read. */
static uint8_t *read_all(const char *path, size_t *n)
{
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc((size_t)len + 1);
    *n = fread(d, 1, (size_t)len, f);
    d[*n] = 0;
    fclose(f);
    return d;
}

/* The first half of a file, as a new file. */
static void truncate_copy(const char *src, const char *dst)
{
    size_t n;
    uint8_t *d = read_all(src, &n);
    write_bytes(dst, d, n / 2);
    free(d);
}

static uint8_t gray601(int r, int g, int b)
{
    return (uint8_t)((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16);
}

/* ---- writers (libpng, libjpeg) ---- */

/* rows: h rows of packed samples as PNG stores them (16-bit big endian). */
static void write_png(const char *path, int w, int h, int type, int depth, int interlace,
                      const uint8_t *rows, const png_color *pal, int n_pal, const uint8_t *trans,
                      int n_trans)
{
    FILE *f = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, type,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, n_pal);
    if (trans) png_set_tRNS(png, info, trans, n_trans, NULL);
    png_write_info(png, info);
    size_t rb = png_get_rowbytes(png, info);
    png_bytep *rp = malloc(sizeof(png_bytep) * (size_t)h);
    for (int y = 0; y < h; y++) rp[y] = (png_bytep)rows + (size_t)y * rb;
    png_write_image(png, rp);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(rp);
    fclose(f);
}

/* px: (h, w, comps) interleaved; cs: JCS_RGB, JCS_GRAYSCALE or JCS_CMYK. */
static void write_jpeg(const char *path, int w, int h, int comps, int cs, int quality,
                       int progressive, const uint8_t *px)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    FILE *f = fopen(path, "wb");
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = (J_COLOR_SPACE)cs;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    if (progressive) jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW r = (JSAMPROW)px + (size_t)c.next_scanline * w * comps;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
}

/* A smooth RGB test picture (JPEG-friendly): (h, w, 3). */
static uint8_t *smooth_rgb(int w, int h)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *q = p + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)(40 + 170 * x / (w - 1));
            q[1] = (uint8_t)(30 + 190 * y / (h - 1));
            q[2] = (uint8_t)(128 + 100 * sin(0.2 * x + 0.15 * y));
        }
    return p;
}

/* ---- PNG edge cases: decoded exactly as written ---- */

typedef struct png_case {
    const char *name;
    int w, h;
    uint8_t *expect; /* (3, h, w): what decoding to RGB must give */
} png_case;

static png_case png_cases[9];
static int n_png_cases;

static uint8_t pattern(int x, int y, int k)
{
    return (uint8_t)(x * 37 + y * 11 + k * 101 + ((x * y) & 7) * 13);
}

static void add_case(const char *name, int w, int h, uint8_t *expect)
{
    png_cases[n_png_cases++] = (png_case){name, w, h, expect};
}

static void make_png_cases(void)
{
    char p[600];
    const int w = 7, h = 5;
    uint8_t rows[4 * 2 * 16 * 16];
    uint8_t *e;
    /* gray 8 */
    e = malloc(3 * w * h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            rows[y * w + x] = pattern(x, y, 0);
            for (int k = 0; k < 3; k++) e[(k * h + y) * w + x] = pattern(x, y, 0);
        }
    path_of(p, "png/gray8.png");
    write_png(p, w, h, PNG_COLOR_TYPE_GRAY, 8, 0, rows, NULL, 0, NULL, 0);
    add_case("gray8.png", w, h, e);
    /* RGB 8 and RGBA 8 (alpha dropped), gray + alpha */
    for (int alpha = 0; alpha < 3; alpha++) {
        int nc = alpha == 2 ? 2 : alpha ? 4 : 3;
        e = malloc(3 * w * h);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                uint8_t *q = rows + (y * w + x) * nc;
                for (int k = 0; k < nc; k++) q[k] = pattern(x, y, k + (alpha == 2 && k ? 3 : 0));
                for (int k = 0; k < 3; k++) e[(k * h + y) * w + x] = nc == 2 ? q[0] : q[k];
            }
        const char *name = alpha == 2 ? "graya8.png" : alpha ? "rgba8.png" : "rgb8.png";
        snprintf(p, sizeof p, "%s/png/%s", tmpdir, name);
        write_png(p, w, h,
                  alpha == 2 ? PNG_COLOR_TYPE_GRAY_ALPHA
                             : alpha ? PNG_COLOR_TYPE_RGB_ALPHA : PNG_COLOR_TYPE_RGB,
                  8, 0, rows, NULL, 0, NULL, 0);
        add_case(name, w, h, e);
    }
    /* gray 16 and RGB 16: the high byte */
    for (int rgb = 0; rgb < 2; rgb++) {
        int nc = rgb ? 3 : 1;
        e = malloc(3 * w * h);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int k = 0; k < nc; k++) {
                    unsigned v = (unsigned)(x * 9001 + y * 2999 + k * 17011 + 255) & 0xFFFF;
                    uint8_t *q = rows + ((y * w + x) * nc + k) * 2;
                    q[0] = (uint8_t)(v >> 8);
                    q[1] = (uint8_t)v;
                    for (int j = 0; j < 3; j++)
                        if (rgb ? j == k : 1) e[(j * h + y) * w + x] = (uint8_t)(v >> 8);
                }
        const char *name = rgb ? "rgb16.png" : "gray16.png";
        snprintf(p, sizeof p, "%s/png/%s", tmpdir, name);
        write_png(p, w, h, rgb ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, 16, 0, rows, NULL, 0,
                  NULL, 0);
        add_case(name, w, h, e);
    }
    /* palette, 4 bits per index, with transparency (dropped) */
    png_color pal[5] = {{10, 20, 30}, {250, 0, 0}, {0, 250, 0}, {0, 0, 250}, {200, 100, 50}};
    uint8_t trans[5] = {255, 0, 128, 255, 10};
    const int rb4 = (w + 1) / 2;
    memset(rows, 0, sizeof rows);
    e = malloc(3 * w * h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int i = (x + 2 * y) % 5;
            rows[y * rb4 + x / 2] |= (uint8_t)(i << (x % 2 ? 0 : 4));
            e[(0 * h + y) * w + x] = pal[i].red;
            e[(1 * h + y) * w + x] = pal[i].green;
            e[(2 * h + y) * w + x] = pal[i].blue;
        }
    path_of(p, "png/palette4.png");
    write_png(p, w, h, PNG_COLOR_TYPE_PALETTE, 4, 0, rows, pal, 5, trans, 5);
    add_case("palette4.png", w, h, e);
    /* gray 1 bit: 0 / 255 */
    const int rb1 = (w + 7) / 8;
    memset(rows, 0, sizeof rows);
    e = malloc(3 * w * h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int bit = (x + y) % 3 == 0;
            rows[y * rb1 + x / 8] |= (uint8_t)(bit << (7 - x % 8));
            for (int k = 0; k < 3; k++) e[(k * h + y) * w + x] = bit ? 255 : 0;
        }
    path_of(p, "png/gray1.png");
    write_png(p, w, h, PNG_COLOR_TYPE_GRAY, 1, 0, rows, NULL, 0, NULL, 0);
    add_case("gray1.png", w, h, e);
    /* interlaced (Adam7) RGB, larger so that all 7 passes hold pixels */
    const int iw = 13, ih = 11;
    e = malloc(3 * iw * ih);
    for (int y = 0; y < ih; y++)
        for (int x = 0; x < iw; x++)
            for (int k = 0; k < 3; k++) {
                rows[(y * iw + x) * 3 + k] = pattern(x, y, k);
                e[(k * ih + y) * iw + x] = pattern(x, y, k);
            }
    path_of(p, "png/adam7.png");
    write_png(p, iw, ih, PNG_COLOR_TYPE_RGB, 8, 1, rows, NULL, 0, NULL, 0);
    add_case("adam7.png", iw, ih, e);
}

static void test_png_decode(void)
{
    char p[600], err[SSL_ERR_LEN];
    for (int i = 0; i < n_png_cases; i++) {
        const png_case *pc = &png_cases[i];
        snprintf(p, sizeof p, "%s/png/%s", tmpdir, pc->name);
        for (int c = 1; c <= 3; c += 2) {
            uint8_t *px = NULL;
            int h = 0, w = 0;
            int rc = ssl_image_decode(p, c, &px, &h, &w, err);
            CHECK(rc == SSL_OK && h == pc->h && w == pc->w, "%s c=%d: %s", pc->name, c, err);
            if (rc) continue;
            long bad = 0;
            const long hw = (long)h * w;
            for (long q = 0; q < hw; q++) {
                const uint8_t *e = pc->expect;
                if (c == 3) {
                    for (int k = 0; k < 3; k++) bad += px[k * hw + q] != e[k * hw + q];
                } else {
                    bad += px[q] != gray601(e[q], e[hw + q], e[2 * hw + q]);
                }
            }
            CHECK(bad == 0, "%s c=%d: %ld pixels differ from what was written", pc->name, c, bad);
            free(px);
        }
    }
}

/* ---- JPEG: within a small tolerance of what was written ---- */

static void test_jpeg_decode(void)
{
    char p[600], err[SSL_ERR_LEN];
    const int w = 40, h = 24;
    uint8_t *rgb = smooth_rgb(w, h), *gray = malloc((size_t)w * h);
    for (int i = 0; i < w * h; i++) gray[i] = gray601(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]);
    path_of(p, "jpg/rgb.jpg");
    write_jpeg(p, w, h, 3, JCS_RGB, 95, 0, rgb);
    path_of(p, "jpg/progressive.jpg");
    write_jpeg(p, w, h, 3, JCS_RGB, 95, 1, rgb);
    path_of(p, "jpg/gray.jpg");
    write_jpeg(p, w, h, 1, JCS_GRAYSCALE, 95, 0, gray);
    const char *names[] = {"rgb.jpg", "progressive.jpg", "gray.jpg"};
    for (int f = 0; f < 3; f++) {
        snprintf(p, sizeof p, "%s/jpg/%s", tmpdir, names[f]);
        uint8_t *px = NULL;
        int hh = 0, ww = 0;
        int rc = ssl_image_decode(p, 3, &px, &hh, &ww, err);
        CHECK(rc == SSL_OK && hh == h && ww == w, "%s: %s", names[f], err);
        if (rc) continue;
        double sum = 0, mx = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int k = 0; k < 3; k++) {
                    int want = f == 2 ? gray[y * w + x] : rgb[(y * w + x) * 3 + k];
                    double d = fabs((double)px[(k * h + y) * w + x] - want);
                    sum += d;
                    if (d > mx) mx = d;
                }
        double mean = sum / (3.0 * w * h);
        /* quality 95 with 4:2:0 chroma on a smooth picture */
        CHECK(mean < 2.0 && mx <= 16, "%s: mean |err| %.2f, max %.0f", names[f], mean, mx);
        free(px);
    }
    /* CMYK (Adobe, stored inverted as Photoshop writes it): checked against PIL below */
    uint8_t *cmyk = malloc((size_t)w * h * 4);
    for (int i = 0; i < w * h; i++) {
        cmyk[4 * i] = rgb[3 * i];
        cmyk[4 * i + 1] = rgb[3 * i + 1];
        cmyk[4 * i + 2] = rgb[3 * i + 2];
        cmyk[4 * i + 3] = (uint8_t)(200 + i % 50);
    }
    path_of(p, "jpg/cmyk.jpg");
    write_jpeg(p, w, h, 4, JCS_CMYK, 95, 0, cmyk);
    uint8_t *px = NULL;
    int hh, ww;
    int rc = ssl_image_decode(p, 3, &px, &hh, &ww, err);
    CHECK(rc == SSL_OK && hh == h && ww == w, "cmyk.jpg: %s", err);
    free(px);
    free(cmyk);
    free(rgb);
    free(gray);
}
#endif /* TEST_DECODERS */

/* ---- resize + center crop ---- */

/* Independent reference: the same triangle filter in float64, without PIL's
 * 8-bit rounding between the passes; src, dst (c, h, w) / (c, size, size). */
static void ref_resize(const uint8_t *src, int c, int h, int w, int size, double *dst)
{
    int nh, nw;
    if (w <= h) {
        nw = size;
        nh = (int)((double)size * h / w);
    } else {
        nh = size;
        nw = (int)((double)size * w / h);
    }
    int top = (int)lrint((nh - size) / 2.0), left = (int)lrint((nw - size) / 2.0); /* half-even */
    double sy = (double)h / nh, sx = (double)w / nw;
    double fy = sy > 1 ? sy : 1, fx = sx > 1 ? sx : 1;
    for (int k = 0; k < c; k++)
        for (int oy = 0; oy < size; oy++)
            for (int ox = 0; ox < size; ox++) {
                double cy = (oy + top + 0.5) * sy, cx = (ox + left + 0.5) * sx, acc = 0, wsum = 0;
                for (int y = 0; y < h; y++) {
                    double wy = 1 - fabs((y + 0.5 - cy) / fy);
                    if (wy <= 0) continue;
                    for (int x = 0; x < w; x++) {
                        double wx = 1 - fabs((x + 0.5 - cx) / fx);
                        if (wx <= 0) continue;
                        acc += wy * wx * src[((size_t)k * h + y) * w + x];
                        wsum += wy * wx;
                    }
                }
                dst[((size_t)k * size + oy) * size + ox] = acc / wsum;
            }
}

static void test_resize_reference(void)
{
    static const int shapes[][3] = {{23, 37, 16}, {37, 23, 9}, {5, 7, 12}, {64, 64, 64},
                                    {7, 10, 4},   {4, 13, 4},  {4, 15, 4}, {100, 3, 5}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int h = shapes[s][0], w = shapes[s][1], size = shapes[s][2], c = 3;
        uint8_t *src = malloc((size_t)c * h * w), *dst = malloc((size_t)c * size * size);
        double *ref = malloc(sizeof(double) * c * size * size);
        for (int i = 0; i < c * h * w; i++) src[i] = (uint8_t)((i * 7919) % 251);
        int rc = ssl_image_resize_crop(src, c, h, w, size, dst);
        ref_resize(src, c, h, w, size, ref);
        double mx = 0;
        for (int i = 0; i < c * size * size; i++) {
            double d = fabs(dst[i] - ref[i]);
            if (d > mx) mx = d;
        }
        /* PIL rounds to 8 bits after each pass: <= 0.5 + 0.5 levels */
        CHECK(rc == SSL_OK && mx <= 1.01, "resize %dx%d -> %d: max |diff| %.3f vs float reference",
              h, w, size, mx);
        if (h == size && w == size)
            CHECK(!memcmp(src, dst, (size_t)c * h * w), "resize to the same size is the identity");
        free(src);
        free(dst);
        free(ref);
    }
}

#ifdef TEST_DECODERS
/* ---- golden values from torchvision / PIL through /usr/bin/python3 ---- */

static const char golden_py[] =
    "import sys\n"
    "try:\n"
    "    import numpy as np\n"
    "    from PIL import Image\n"
    "    import torchvision.transforms as T\n"
    "    from torchvision import datasets\n"
    "except Exception as e:\n"
    "    print('no PIL / torchvision:', e); sys.exit(3)\n"
    "for line in open(sys.argv[1]):\n"
    "    f = line.rstrip('\\n').split('\\t')\n"
    "    if f[0] == 'img':  # path size channels out: ImageFolder's loader + transforms\n"
    "        im = Image.open(f[1]).convert('RGB')\n"
    "        if f[3] == '1': im = im.convert('L')\n"
    "        s = int(f[2])\n"
    "        if s: im = T.CenterCrop(s)(T.Resize(s)(im))\n"
    "        a = np.asarray(im, dtype=np.uint8)\n"
    "        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)\n"
    "        open(f[4], 'wb').write(np.ascontiguousarray(a).tobytes())\n"
    "    elif f[0] == 'folder':  # root out: the samples list\n"
    "        ds = datasets.ImageFolder(f[1])\n"
    "        with open(f[2], 'w') as o:\n"
    "            o.write(' '.join(ds.classes) + '\\n')\n"
    "            for p, y in ds.samples: o.write('%d %s\\n' % (y, p))\n";

typedef struct golden_req {
    char path[600];
    int size, c;
    char out[600];
} golden_req;

static golden_req reqs[64];
static int n_reqs, golden_ok;

static void want_golden(const char *path, int size, int c)
{
    golden_req *r = &reqs[n_reqs];
    snprintf(r->path, sizeof r->path, "%s", path);
    r->size = size;
    r->c = c;
    snprintf(r->out, sizeof r->out, "%s/golden_%d.bin", tmpdir, n_reqs);
    n_reqs++;
}

/* Runs the script once for every request; 1 when the goldens exist. */
static int run_golden(const char *folder_root, const char *folder_out)
{
    char script[600], list[600], cmd[2000], log[600];
    snprintf(script, sizeof script, "%s/golden.py", tmpdir);
    snprintf(list, sizeof list, "%s/golden.tsv", tmpdir);
    snprintf(log, sizeof log, "%s/golden.log", tmpdir);
    write_bytes(script, golden_py, strlen(golden_py));
    FILE *f = fopen(list, "w");
    for (int i = 0; i < n_reqs; i++)
        fprintf(f, "img\t%s\t%d\t%d\t%s\n", reqs[i].path, reqs[i].size, reqs[i].c, reqs[i].out);
    fprintf(f, "folder\t%s\t%s\n", folder_root, folder_out);
    fclose(f);
    struct stat st;
    if (stat("/usr/bin/python3", &st) != 0) {
        printf("note: /usr/bin/python3 missing, torchvision comparisons skipped\n");
        return 0;
    }
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s' >'%s' 2>&1", script, list, log);
    int rc = system(cmd);
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 3) {
        printf("note: PIL / torchvision not importable, torchvision comparisons skipped\n");
        return 0;
    }
    CHECK(rc == 0, "golden script failed (see %s)", log);
    return rc == 0;
}

static void check_golden(int i)
{
    const golden_req *r = &reqs[i];
    char err[SSL_ERR_LEN];
    size_t n = 0;
    uint8_t *want = read_all(r->out, &n), *got = NULL;
    int rc, h = r->size, w = r->size;
    if (r->size) {
        got = malloc((size_t)r->c * r->size * r->size);
        rc = ssl_image_load(r->path, r->c, r->size, got, err);
    } else {
        rc = ssl_image_decode(r->path, r->c, &got, &h, &w, err);
    }
    CHECK(rc == SSL_OK, "%s: %s", r->path, err);
    if (!rc && want) {
        size_t len = (size_t)r->c * h * w;
        long diff = 0;
        int mx = 0;
        for (size_t k = 0; k < len && n == len; k++) {
            int d = abs(got[k] - want[k]);
            diff += d != 0;
            if (d > mx) mx = d;
        }
        CHECK(n == len && diff == 0, "%s size %d c=%d: %ld of %zu values differ from torchvision "
              "(max %d), golden %zu bytes", r->path, r->size, r->c, diff, len, mx, n);
    }
    free(want);
    free(got);
}

#endif /* TEST_DECODERS */

/* ---- folders ---- */

static void write_text(const char *rel, const char *text)
{
    char p[600];
    path_of(p, rel);
    write_bytes(p, text, strlen(text));
}

#ifdef TEST_DECODERS

static void copy_file(const char *src, const char *rel)
{
    char p[600];
    size_t n;
    uint8_t *d = read_all(src, &n);
    path_of(p, rel);
    write_bytes(p, d, n);
    free(d);
}

/* The listing: classes in byte order, files in sorted(os.walk()) order. */
static void test_listing(const char *golden_out)
{
    char root[600], err[SSL_ERR_LEN];
    path_of(root, "tree");
    ssl_imagefolder f;
    int rc = ssl_imagefolder_scan(&f, root, 1, NULL, err);
    CHECK(rc == SSL_OK && f.n_classes == 3 && f.n == 7, "tree scan: %s (n %d, classes %d)", err,
          f.n, f.n_classes);
    if (rc) return;
    CHECK(!strcmp(f.classes[0], "Zebra") && !strcmp(f.classes[1], "a_cat") &&
              !strcmp(f.classes[2], "b_dog"),
          "classes sorted by bytes: %s %s %s", f.classes[0], f.classes[1], f.classes[2]);
    static const char *const order[] = {"Zebra/z.png",        "a_cat/10.png",
                                        "a_cat/2.png",        "a_cat/sub/1.png",
                                        "a_cat/sub-x/y.png",  "a_cat/sub/deeper/d.png",
                                        "b_dog/x.webp"};
    static const int labels[] = {0, 1, 1, 1, 1, 1, 2};
    for (int i = 0; i < f.n && i < 7; i++) {
        char want[700];
        snprintf(want, sizeof want, "%s/%s", root, order[i]);
        CHECK(!strcmp(f.paths[i], want) && f.labels[i] == labels[i], "file %d: %s (label %d)", i,
              f.paths[i], f.labels[i]);
    }
    if (golden_out) { /* and torchvision's own ImageFolder agrees */
        size_t n;
        char *txt = (char *)read_all(golden_out, &n);
        CHECK(txt != NULL, "torchvision listing missing");
        if (txt) {
            char *save = NULL, *line = strtok_r(txt, "\n", &save);
            CHECK(line && !strcmp(line, "Zebra a_cat b_dog"), "torchvision classes: %s", line);
            int i = 0;
            while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
                char want[700];
                snprintf(want, sizeof want, "%d %s", i < f.n ? f.labels[i] : -1,
                         i < f.n ? f.paths[i] : "");
                CHECK(!strcmp(line, want), "torchvision sample %d: '%s', ours '%s'", i, line, want);
                i++;
            }
            CHECK(i == f.n, "torchvision lists %d files, we %d", i, f.n);
            free(txt);
        }
    }
    ssl_imagefolder_free(&f);
}

/* A class-folder tree of PNGs and one JPEG, loaded with 1 and 3 threads. */
static void test_class_folder(void)
{
    char root[600], err[SSL_ERR_LEN];
    path_of(root, "classes");
    ssl_data_opts o;
    ssl_data_opts_default(&o);
    o.image_size = 6;
    ssl_dataset a, b;
    o.n_threads = 1;
    int rc = ssl_dataset_load_opts(&a, root, 1, &o, err);
    CHECK(rc == SSL_OK && a.n == 5 && a.c == 3 && a.h == 6 && a.w == 6 && a.n_classes == 2 &&
              a.labels,
          "class folder: %s", err);
    o.n_threads = 3;
    rc |= ssl_dataset_load_opts(&b, root, 1, &o, err);
    if (rc) return;
    CHECK(b.n == a.n && !memcmp(a.images, b.images, (size_t)a.n * 3 * 36) &&
              !memcmp(a.labels, b.labels, sizeof(int32_t) * a.n),
          "1 and 3 decoding threads give the same dataset");
    ssl_imagefolder f;
    if (ssl_imagefolder_scan(&f, root, 1, &o, err) == SSL_OK) {
        uint8_t one[3 * 36];
        for (int i = 0; i < f.n; i++) {
            rc = ssl_image_load(f.paths[i], 3, 6, one, err);
            CHECK(rc == SSL_OK && !memcmp(one, a.images + (size_t)i * 108, 108) &&
                      a.labels[i] == f.labels[i],
                  "image %d of the dataset is %s decoded alone", i, f.paths[i]);
        }
        ssl_imagefolder_free(&f);
    }
    ssl_dataset_free(&a);
    ssl_dataset_free(&b);
    /* options in the spec; gray */
    char spec[700];
    snprintf(spec, sizeof spec, "%s#size=4,channels=1", root);
    rc = ssl_dataset_load(&a, spec, 1, err);
    CHECK(rc == SSL_OK && a.c == 1 && a.h == 4 && a.n == 5, "spec options: %s", err);
    ssl_dataset_free(&a);
    snprintf(spec, sizeof spec, "%s#size=4,colour=1", root);
    rc = ssl_dataset_load(&a, spec, 1, err);
    CHECK(rc == SSL_EINVAL && has(err, "unknown option 'colour'", NULL), "bad option: %s", err);
    snprintf(spec, sizeof spec, "%s#channels=2", root);
    rc = ssl_dataset_load(&a, spec, 1, err);
    CHECK(rc == SSL_EINVAL && has(err, "bad value for channels", NULL), "bad channels: %s", err);
    rc = ssl_dataset_load(&a, "fashion-mnist#size=32", 1, err);
    CHECK(rc == SSL_EINVAL && has(err, "image folders", NULL), "options on IDX: %s", err);
    /* no test split */
    rc = ssl_dataset_load(&a, root, 0, err);
    CHECK(rc == SSL_EINVAL && has(err, root, "no test split"), "no test split: %s", err);
    /* hold-out: per class, position i goes to test when floor((i+1)f) > floor(if) */
    snprintf(spec, sizeof spec, "%s#holdout=0.5,size=4", root);
    rc = ssl_dataset_load(&a, spec, 1, err);
    rc |= ssl_dataset_load(&b, spec, 0, err);
    /* classes: a (3 files: train 0, 2; test 1), b (2 files: train 0; test 1) */
    CHECK(rc == SSL_OK && a.n == 3 && b.n == 2 && a.labels[0] == 0 && a.labels[1] == 0 &&
              a.labels[2] == 1 && b.labels[0] == 0 && b.labels[1] == 1 &&
              has(b.source, "hold-out test part", NULL),
          "hold-out: %s (train %d, test %d)", err, a.n, b.n);
    ssl_dataset_free(&a);
    ssl_dataset_free(&b);
}

static void test_splits(void)
{
    char root[600], err[SSL_ERR_LEN];
    path_of(root, "split");
    ssl_dataset tr, te;
    int rc = ssl_dataset_load(&tr, root, 1, err);
    CHECK(rc == SSL_OK && tr.n == 3 && tr.n_classes == 2 && tr.h == 64 && tr.c == 3,
          "train/: %s", err);
    rc = ssl_dataset_load(&te, root, 0, err);
    /* val/ only has dog: it keeps train/'s index 1 */
    CHECK(rc == SSL_OK && te.n == 1 && te.labels[0] == 1 && te.n_classes == 2 &&
              has(te.source, "/val", NULL),
          "val/: %s", err);
    ssl_dataset_free(&tr);
    ssl_dataset_free(&te);
    char spec[700];
    snprintf(spec, sizeof spec, "%s#holdout=0.2", root);
    rc = ssl_dataset_load(&tr, spec, 1, err);
    CHECK(rc == SSL_EINVAL && has(err, "hold-out", NULL), "hold-out beside val/: %s", err);
    make_dirs("split/val/fox");
    rc = ssl_dataset_load(&te, root, 0, err);
    CHECK(rc == SSL_EFORMAT && has(err, "class 'fox'", "not a class folder"), "unknown class: %s",
          err);
    rmdir(strcat(root, "/val/fox"));
    /* a class folder without images */
    make_dirs("split/train/empty_class");
    path_of(root, "split");
    rc = ssl_dataset_load(&tr, root, 1, err);
    CHECK(rc == SSL_EFORMAT && has(err, "empty_class", "without images"), "empty class: %s", err);
}

static void test_flat(void)
{
    char root[600], err[SSL_ERR_LEN];
    path_of(root, "flat");
    ssl_dataset ds;
    int rc = ssl_dataset_load(&ds, root, 1, err);
    CHECK(rc == SSL_OK && ds.n == 3 && ds.labels == NULL && ds.n_classes == 0, "flat: %s", err);
    ssl_dataset_free(&ds);
    rc = ssl_dataset_load(&ds, root, 0, err);
    CHECK(rc == SSL_EINVAL && has(err, "no test split", NULL), "flat test split: %s", err);
    char spec[700];
    snprintf(spec, sizeof spec, "%s#holdout=0.5", root);
    rc = ssl_dataset_load(&ds, spec, 0, err);
    CHECK(rc == SSL_OK && ds.n == 1, "flat hold-out test: %s", err);
    ssl_dataset_free(&ds);
    /* empty folders */
    make_dirs("nothing");
    path_of(root, "nothing");
    write_text("nothing/readme.txt", "no pictures here");
    rc = ssl_dataset_load(&ds, root, 1, err);
    CHECK(rc == SSL_EIO && has(err, root, "no dataset files found") && has(err, ".jpg", NULL),
          "folder without images: %s", err);
}

/* Reads what stderr got while fn ran. */
static char *run_capturing(ssl_dataset *ds, const char *spec, int threads, int *rc, char *err)
{
    char log[600];
    path_of(log, "stderr.log");
    fflush(stderr);
    int saved = dup(2), fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
    ssl_data_opts o;
    ssl_data_opts_default(&o);
    o.image_size = 8;
    o.n_threads = threads;
    *rc = ssl_dataset_load_opts(ds, spec, 1, &o, err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    size_t n;
    char *txt = (char *)read_all(log, &n);
    return txt ? txt : strdup("");
}

static void test_bad_files(void)
{
    char root[600], p[600], err[SSL_ERR_LEN], err1[SSL_ERR_LEN], spec[700];
    path_of(root, "bad");
    struct {
        const char *name, *what, *also;
    } bad[] = {
        {"bad/c/empty.png", "empty file", NULL},
        {"bad/c/fake.bmp", "not a JPEG or PNG", "BMP"},
        {"bad/c/text.jpg", "not a JPEG or PNG", "starts with 68 65 6c 6c"},
#ifdef SSL_HAVE_JPEG
        {"bad/c/trunc.jpg", "truncated JPEG", NULL},
        {"bad/c/corrupt.jpg", "corrupt JPEG", "precision 7"},
#endif
#ifdef SSL_HAVE_PNG
        {"bad/c/trunc.png", "truncated PNG", NULL},
        {"bad/c/crc.png", "corrupt PNG", "CRC"},
#endif
    };
    const int n_bad = (int)(sizeof bad / sizeof bad[0]);
    for (int i = 0; i < n_bad; i++) {
        uint8_t *px = NULL;
        int h, w;
        path_of(p, bad[i].name);
        int rc = ssl_image_decode(p, 3, &px, &h, &w, err);
        CHECK(rc != SSL_OK && px == NULL && has(err, p, bad[i].what) &&
                  (!bad[i].also || has(err, bad[i].also, NULL)) && !strchr(err, '\n'),
              "%s: %s", bad[i].name, err);
    }
    path_of(p, "bad/c/missing.png");
    uint8_t *px;
    int h, w;
    CHECK(ssl_image_decode(p, 3, &px, &h, &w, err) == SSL_EIO && has(err, p, "cannot open"),
          "missing file: %s", err);
    /* the load fails on the first bad file in file order, whatever the threads */
    ssl_dataset ds;
    int rc;
    char *log = run_capturing(&ds, root, 1, &rc, err1);
    free(log);
    path_of(p, "bad/c/corrupt.jpg");
#ifndef SSL_HAVE_JPEG
    path_of(p, "bad/c/crc.png");
#endif
    CHECK(rc != SSL_OK && has(err1, p, NULL) && ds.images == NULL, "bad folder: %s", err1);
    log = run_capturing(&ds, root, 4, &rc, err);
    free(log);
    CHECK(rc != SSL_OK && !strcmp(err, err1), "4 threads report the same file: %s", err);
    /* skip mode: a warning per bad file, in file order; the good ones stay */
    snprintf(spec, sizeof spec, "%s#skip-bad", root);
    for (int threads = 1; threads <= 3; threads += 2) {
        log = run_capturing(&ds, spec, threads, &rc, err);
        CHECK(rc == SSL_OK && ds.n == 2 && ds.labels && ds.labels[1] == 0, "skip mode: %s", err);
        int lines = 0;
        for (const char *s = log; (s = strstr(s, "selfsup: warning: skipped ")); s++) lines++;
        CHECK(lines == n_bad, "%d warnings for %d bad files: %s", lines, n_bad, log);
        for (int i = 0; i < n_bad; i++) {
            path_of(p, bad[i].name);
            CHECK(strstr(log, p) != NULL, "a warning names %s", p);
        }
        char e1[700], e2[700];
        path_of(e1, "bad/c/empty.png");
        path_of(e2, "bad/c/text.jpg");
        CHECK(strstr(log, e1) && strstr(log, e2) && strstr(log, e1) < strstr(log, e2),
              "warnings in file order");
        free(log);
        ssl_dataset_free(&ds);
    }
    /* all bad */
    path_of(root, "allbad");
    snprintf(spec, sizeof spec, "%s#skip-bad", root);
    log = run_capturing(&ds, spec, 2, &rc, err);
    CHECK(rc == SSL_EFORMAT && has(err, "none of the 2 images could be decoded", NULL),
          "all bad: %s", err);
    free(log);
}

/* Random byte damage to a good JPEG and PNG, and every truncation length of
 * the PNG: each decode succeeds or fails with one line naming the file. */
static void test_damage(void)
{
    static const char *const src[] = {"jpg/progressive.jpg", "png/adam7.png"};
    char p[600], q[600], err[SSL_ERR_LEN];
    int bad_msgs = 0, failed = 0, tried = 0;
    uint64_t state = 12345;
    for (int f = 0; f < 2; f++) {
        size_t n;
        path_of(p, src[f]);
        uint8_t *orig = read_all(p, &n), *d = malloc(n);
        path_of(q, f ? "damaged.png" : "damaged.jpg");
        for (int t = 0; t < 300; t++) {
            memcpy(d, orig, n);
            size_t len = n;
            if (f == 1 && t < (int)n) {
                len = (size_t)t; /* every prefix */
            } else {
                for (int k = 0; k < 1 + t % 4; k++) {
                    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
                    size_t at = 2 + (size_t)(state >> 33) % (n - 2);
                    d[at] = (uint8_t)(state >> 13);
                }
            }
            write_bytes(q, d, len);
            uint8_t *px = NULL;
            int h, w;
            int rc = ssl_image_decode(q, 3, &px, &h, &w, err);
            tried++;
            if (rc) {
                failed++;
                bad_msgs += !has(err, q, NULL) || strchr(err, '\n') != NULL;
            }
            free(px);
        }
        free(orig);
        free(d);
    }
    CHECK(bad_msgs == 0 && failed > 0, "%d damaged files, %d refused, %d without the file name",
          tried, failed, bad_msgs);
}

/* ---- the photos of python3-sklearn ---- */

static const char *photos_dir(void)
{
    static const char *const dirs[] = {NULL,
                                       "/usr/lib/python3/dist-packages/sklearn/datasets/images",
                                       "/usr/local/share/selfsup/photos"};
    const char *env = getenv("SSL_PHOTOS_DIR");
    for (int i = 0; i < 3; i++) {
        const char *d = i ? dirs[i] : env;
        char p[600];
        struct stat st;
        if (!d) continue;
        snprintf(p, sizeof p, "%s/china.jpg", d);
        if (stat(p, &st) == 0) return d;
    }
    return NULL;
}
#endif /* TEST_DECODERS */

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/selfsup_test_imagefolder_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    char p[600], q[600];
    make_dirs("png");
    make_dirs("jpg");
    test_resize_reference();
#ifdef TEST_DECODERS
    make_png_cases();
    test_png_decode();
    test_jpeg_decode();

    /* folders made of the generated files */
    make_dirs("tree/Zebra");
    make_dirs("tree/a_cat/sub/deeper");
    make_dirs("tree/a_cat/sub-x");
    make_dirs("tree/b_dog");
    path_of(p, "png/rgb8.png");
    static const char *const tree[] = {"tree/Zebra/z.png", "tree/a_cat/10.png",
                                       "tree/a_cat/2.png", "tree/a_cat/sub/1.png",
                                       "tree/a_cat/sub-x/y.png", "tree/a_cat/sub/deeper/d.png"};
    for (size_t i = 0; i < sizeof tree / sizeof tree[0]; i++) copy_file(p, tree[i]);
    write_text("tree/b_dog/x.webp", "RIFF0000WEBPVP8 "); /* listed like torchvision, not decoded */
    write_text("tree/b_dog/notes.txt", "ignored");
    make_dirs("classes/a");
    make_dirs("classes/b");
    copy_file(p, "classes/a/1.png");
    path_of(p, "png/palette4.png");
    copy_file(p, "classes/a/2.PNG");
    path_of(p, "jpg/rgb.jpg");
    copy_file(p, "classes/a/3.jpeg");
    path_of(p, "png/gray16.png");
    copy_file(p, "classes/b/1.png");
    path_of(p, "png/adam7.png");
    copy_file(p, "classes/b/2.png");
    write_text("classes/b/.hidden.jpg", "not even an image: hidden files are ignored");
    make_dirs("split/train/cat");
    make_dirs("split/train/dog");
    make_dirs("split/val/dog");
    path_of(p, "jpg/gray.jpg");
    copy_file(p, "split/train/cat/1.jpg");
    copy_file(p, "split/train/cat/2.jpg");
    copy_file(p, "split/train/dog/1.jpg");
    copy_file(p, "split/val/dog/1.jpg");
    make_dirs("flat");
    copy_file(p, "flat/a.jpg");
    path_of(p, "png/rgba8.png");
    copy_file(p, "flat/b.png");
    copy_file(p, "flat/c.png");
    /* bad files, and two good ones */
    make_dirs("bad/c");
    make_dirs("allbad");
    write_text("bad/c/empty.png", "");
    write_text("bad/c/fake.bmp", "BM\x36\x00\x00\x00\x00\x00");
    write_text("bad/c/text.jpg", "hello, I am not a picture\n");
    path_of(p, "jpg/rgb.jpg");
    path_of(q, "bad/c/trunc.jpg");
    truncate_copy(p, q);
    copy_file(p, "bad/c/good.jpg");
    {
        size_t n; /* a whole JPEG whose frame header says 7-bit samples */
        uint8_t *d = read_all(p, &n);
        for (size_t i = 0; i + 4 < n; i++)
            if (d[i] == 0xFF && d[i + 1] == 0xC0) {
                d[i + 4] = 7;
                break;
            }
        path_of(q, "bad/c/corrupt.jpg");
        write_bytes(q, d, n);
        free(d);
    }
    path_of(p, "png/adam7.png");
    path_of(q, "bad/c/trunc.png");
    truncate_copy(p, q);
    copy_file(p, "bad/c/good2.png");
    {
        size_t n;
        uint8_t *d = read_all(p, &n);
        d[29] ^= 0x55; /* the IHDR's CRC */
        path_of(q, "bad/c/crc.png");
        write_bytes(q, d, n);
        free(d);
    }
    write_text("allbad/x.png", "");
    write_text("allbad/y.jpg", "nope");

    test_class_folder();
    test_splits();
    test_flat();
    test_bad_files();
    test_damage();

    /* torchvision goldens: every generated picture at its own size and
     * resized (several geometries, both channel counts), then the photos */
    for (int i = 0; i < n_png_cases; i++) {
        if (!strcmp(png_cases[i].name, "gray16.png")) continue; /* PIL clips mode I to RGB */
        snprintf(p, sizeof p, "%s/png/%s", tmpdir, png_cases[i].name);
        want_golden(p, 0, 3);
        want_golden(p, 4, 3);
        want_golden(p, 3, 1);
        want_golden(p, 9, 3);
    }
    static const char *const jpgs[] = {"rgb.jpg", "progressive.jpg", "gray.jpg", "cmyk.jpg"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/jpg/%s", tmpdir, jpgs[i]);
        want_golden(p, 0, 3);
        want_golden(p, 0, 1);
        want_golden(p, 16, 3);
        want_golden(p, 7, 1);
    }
    const char *photos = photos_dir();
    if (photos) {
        static const char *const ph[] = {"china.jpg", "flower.jpg"};
        for (int i = 0; i < 2; i++) {
            snprintf(p, sizeof p, "%s/%s", photos, ph[i]);
            want_golden(p, 0, 3);
            want_golden(p, 64, 3);
            want_golden(p, 64, 1);
            want_golden(p, 97, 3);
            want_golden(p, 500, 3); /* upscaling the short side 427 -> 500 */
        }
    } else {
        printf("note: no photos (china.jpg) in $SSL_PHOTOS_DIR, python3-sklearn's images or "
               "/usr/local/share/selfsup/photos: run scripts/setup.sh; photo checks skipped\n");
    }
    char listing[600], troot[600];
    path_of(listing, "torchvision_listing.txt");
    path_of(troot, "tree");
    golden_ok = run_golden(troot, listing);
    test_listing(golden_ok ? listing : NULL);
    if (golden_ok) {
        for (int i = 0; i < n_reqs; i++) check_golden(i);
        printf("compared %d decodes / resizes with torchvision's (photos: %s)\n", n_reqs,
               photos ? photos : "none");
    }
    if (photos) { /* a flat folder of the two photos */
        make_dirs("photos");
        snprintf(p, sizeof p, "%s/china.jpg", photos);
        copy_file(p, "photos/china.jpg");
        snprintf(p, sizeof p, "%s/flower.jpg", photos);
        copy_file(p, "photos/flower.jpg");
        path_of(p, "photos");
        ssl_dataset ds;
        char err[SSL_ERR_LEN];
        int rc = ssl_dataset_load(&ds, p, 1, err);
        CHECK(rc == SSL_OK && ds.n == 2 && ds.c == 3 && ds.h == 64 && !ds.labels,
              "photo folder: %s", err);
        ssl_dataset_free(&ds);
    }
    for (int i = 0; i < n_png_cases; i++) free(png_cases[i].expect);
#else
    /* built without a decoder: its files fail with a clear message */
    make_dirs("classes/a");
#ifndef SSL_HAVE_JPEG
    write_text("classes/a/x.jpg", "\xff\xd8\xff\xe0");
#else
    write_text("classes/a/x.png", "\x89PNG\r\n\x1a\n");
#endif
    path_of(p, "classes");
    ssl_dataset ds;
    char err[SSL_ERR_LEN];
    int rc = ssl_dataset_load(&ds, p, 1, err);
    CHECK(rc == SSL_EDEVICE && has(err, "built without", NULL), "no decoders: %s", err);
    printf("note: built without libjpeg or libpng: decoding checks skipped\n");
    (void)q;
#endif
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_report("imagefolder");
}
