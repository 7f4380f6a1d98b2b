/* Winograd convolution for 3x3, stride 1, pad 1: F(m x m, 3x3) with output
 * tiles of m = 4 (6 x 6 point transforms; 36 multiplications per 16 outputs
 * instead of 144) or m = 2 (4 x 4; 16 per 4 instead of 36).
 *
 *   forward       Y = A^T [ (G g G^T) . (B^T d B) ] A per tile, the sum over
 *                 input channels being alpha^2 GEMMs U_xi (K x C) V_xi (C x tiles)
 *   backward data the forward of dy with the kernel turned 180 degrees and
 *                 C and K swapped (stride 1, pad 1 is its own transpose)
 *   backward weights  the exact gradient of the forward's algebra,
 *                 dg = G^T [ sum over tiles (B^T d B) . (A dY A^T) ] G, the sum
 *                 being alpha^2 GEMMs dY_xi (K x tiles) X_xi^T (tiles x C)
 *
 * Vectors run across 8 images: the planes of a group of 8 images are first
 * interleaved (pixel-major, image-minor, zero padded), so that every tile
 * transform is plain 8-wide arithmetic with no gathers and no edge cases,
 * whatever the layout (CNHW or NCHW) and whatever H and W (partial tiles read
 * zeros; their extra outputs are dropped). A batch that is not a multiple of
 * 8 leaves lanes of zeros.
 *
 * Work is cut into blocks of tile positions (a position = one tile place in
 * one group of 8 images), sized so that a block's transformed tiles are about
 * as large as U and fit L2 for small layers; threads take blocks in a static
 * schedule and each block is transformed, multiplied and transformed back by
 * one thread. Forward and backward data are therefore the same whatever the
 * thread count; the weight gradient sums per-thread partial sums in thread
 * order (repeatable for a given thread count, like the cpu backend), or,
 * for the widest layers, the threads split its output channels.
 * Checked against ref.c by tests/test_winograd.c. */
#include "winograd.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define WG_AVX 1
#ifdef __AVX512F__
/* the GEMM micro-kernel 16 columns (two tile positions) a vector; the
 * transforms stay 8-wide */
#define WG_AVX512 1
#endif
#endif

/* ---- 8-wide float vectors: AVX2 + FMA, or plain C ---- */
#ifdef WG_AVX
typedef __m256 vf;
static inline vf v_ld(const float *p) { return _mm256_loadu_ps(p); }
static inline void v_st(float *p, vf a) { _mm256_storeu_ps(p, a); }
static inline vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf v_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf v_set1(float s) { return _mm256_set1_ps(s); }
static inline vf v_zero(void) { return _mm256_setzero_ps(); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); } /* a*b+c */
static inline vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
#else
typedef struct vf { float f[8]; } vf;
static inline vf v_ld(const float *p) { vf r; memcpy(r.f, p, sizeof r.f); return r; }
static inline void v_st(float *p, vf a) { memcpy(p, a.f, sizeof a.f); }
#define WG_LANEWISE(name, expr) \
    static inline vf name(vf a, vf b) { vf r; for (int i = 0; i < 8; i++) r.f[i] = (expr); return r; }
WG_LANEWISE(v_add, a.f[i] + b.f[i])
WG_LANEWISE(v_sub, a.f[i] - b.f[i])
WG_LANEWISE(v_mul, a.f[i] * b.f[i])
static inline vf v_set1(float s) { vf r; for (int i = 0; i < 8; i++) r.f[i] = s; return r; }
static inline vf v_zero(void) { return v_set1(0.0f); }
static inline vf v_fma(vf a, vf b, vf c) { vf r; for (int i = 0; i < 8; i++) r.f[i] = a.f[i] * b.f[i] + c.f[i]; return r; }
#endif

/* dst row i (ds floats apart) = (or += when acc) column i of the 8x8 block
 * src (rows ss apart). */
static inline void tr8(const float *src, size_t ss, float *dst, size_t ds, int acc)
{
#ifdef WG_AVX
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ss),
           r2 = _mm256_loadu_ps(src + 2 * ss), r3 = _mm256_loadu_ps(src + 3 * ss),
           r4 = _mm256_loadu_ps(src + 4 * ss), r5 = _mm256_loadu_ps(src + 5 * ss),
           r6 = _mm256_loadu_ps(src + 6 * ss), r7 = _mm256_loadu_ps(src + 7 * ss);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
           t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3),
           t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE),
           s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE),
           s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    __m256 o[8] = {_mm256_permute2f128_ps(s0, s4, 0x20), _mm256_permute2f128_ps(s1, s5, 0x20),
                   _mm256_permute2f128_ps(s2, s6, 0x20), _mm256_permute2f128_ps(s3, s7, 0x20),
                   _mm256_permute2f128_ps(s0, s4, 0x31), _mm256_permute2f128_ps(s1, s5, 0x31),
                   _mm256_permute2f128_ps(s2, s6, 0x31), _mm256_permute2f128_ps(s3, s7, 0x31)};
    if (acc)
        for (int i = 0; i < 8; i++)
            _mm256_storeu_ps(dst + i * ds, _mm256_add_ps(_mm256_loadu_ps(dst + i * ds), o[i]));
    else
        for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + i * ds, o[i]);
#else
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) {
            float v = src[j * ss + i];
            dst[i * ds + j] = acc ? dst[i * ds + j] + v : v;
        }
#endif
}

/* ---- transform matrices ----
 * Points 0, 1, -1, inf (m = 2) and 0, 1, -1, 2, -2, inf (m = 4), Lavin and
 * Gray's choice; the input and output transforms below are these matrices
 * written out with their common subexpressions. */
static const float G2[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
static const float G4[6][3] = {{0.25f, 0, 0},
                               {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                               {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                               {1.0f / 24, 1.0f / 12, 1.0f / 6},
                               {1.0f / 24, -1.0f / 12, 1.0f / 6},
                               {0, 0, 1}};

static const float *g_matrix(int m) { return m == 2 ? &G2[0][0] : &G4[0][0]; }

/* 1-D transforms on vectors s apart: in (alpha) -> B^T in,
 * out (alpha) -> A^T out (m values), dy (m) -> A dy (alpha). */
static inline void bt2(vf *o, int os, const vf *d, int ds)
{
    vf d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds];
    o[0] = v_sub(d0, d2);
    o[os] = v_add(d1, d2);
    o[2 * os] = v_sub(d2, d1);
    o[3 * os] = v_sub(d1, d3);
}

static inline void bt4(vf *o, int os, const vf *d, int ds)
{
    vf d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds], d5 = d[5 * ds];
    vf m4 = v_set1(-4.0f), m5 = v_set1(-5.0f), p4 = v_set1(4.0f), p2 = v_set1(2.0f);
    vf t1 = v_fma(m4, d2, d4), t2 = v_fma(m4, d1, d3);
    vf t3 = v_sub(d4, d2), t4 = v_mul(p2, v_sub(d3, d1));
    o[0] = v_fma(p4, d0, v_fma(m5, d2, d4));
    o[os] = v_add(t1, t2);
    o[2 * os] = v_sub(t1, t2);
    o[3 * os] = v_add(t3, t4);
    o[4 * os] = v_sub(t3, t4);
    o[5 * os] = v_fma(p4, d1, v_fma(m5, d3, d5));
}

static inline void at2(vf *o, int os, const vf *s, int ss)
{
    vf s1 = s[ss], s2 = s[2 * ss];
    o[0] = v_add(v_add(s[0], s1), s2);
    o[os] = v_sub(v_sub(s1, s2), s[3 * ss]);
}

static inline void at4(vf *o, int os, const vf *s, int ss)
{
    vf a = v_add(s[ss], s[2 * ss]), b = v_sub(s[ss], s[2 * ss]);
    vf c = v_add(s[3 * ss], s[4 * ss]), e = v_sub(s[3 * ss], s[4 * ss]);
    o[0] = v_add(v_add(s[0], a), c);
    o[os] = v_fma(v_set1(2.0f), e, b);
    o[2 * os] = v_fma(v_set1(4.0f), c, a);
    o[3 * os] = v_add(v_fma(v_set1(8.0f), e, b), s[5 * ss]);
}

static inline void a2(vf *o, int os, const vf *g, int gs)
{
    vf g0 = g[0], g1 = g[gs];
    o[0] = g0;
    o[os] = v_add(g0, g1);
    o[2 * os] = v_sub(g0, g1);
    o[3 * os] = v_sub(v_zero(), g1);
}

static inline void a4(vf *o, int os, const vf *g, int gs)
{
    vf g0 = g[0], g1 = g[gs], g2 = g[2 * gs], g3 = g[3 * gs];
    vf s02 = v_add(g0, g2), s13 = v_add(g1, g3);
    vf t = v_fma(v_set1(4.0f), g2, g0), u = v_mul(v_set1(2.0f), v_fma(v_set1(4.0f), g3, g1));
    o[0] = g0;
    o[os] = v_add(s02, s13);
    o[2 * os] = v_sub(s02, s13);
    o[3 * os] = v_add(t, u);
    o[4 * os] = v_sub(t, u);
    o[5 * os] = g3;
}

/* ---- geometry ---- */
typedef struct wg_geom {
    int m, a;             /* output tile, alpha = m + 2 */
    int N, C, K, H, W;    /* x (N, C, H, W), y (N, K, H, W) */
    int TH, TW, groups;   /* tile grid, groups of 8 images */
    int nq;               /* tile rows in all: groups * TH */
    long npos;            /* tile positions (8 tiles each) in all: nq * TW */
    int wpx;              /* interleaved columns used: TW*m + 2 rounded up to 8 */
    int wp8;              /* interleaved row stride in pixels: wpx + 8, so that an
                             8-pixel read from any used column stays in the row */
    long xsn, xsc, ysn, ysc;
} wg_geom;

static void geom_init(wg_geom *g, int m, int N, int C, int K, int H, int W, ssl_layout l)
{
    g->m = m;
    g->a = m + 2;
    g->N = N; g->C = C; g->K = K; g->H = H; g->W = W;
    g->TH = (H + m - 1) / m;
    g->TW = (W + m - 1) / m;
    g->groups = (N + 7) / 8;
    g->nq = g->groups * g->TH;
    g->npos = (long)g->nq * g->TW;
    g->wpx = (g->TW * m + 2 + 7) / 8 * 8;
    g->wp8 = g->wpx + 8;
    ssl_layout_strides(l, N, C, H, W, &g->xsn, &g->xsc);
    ssl_layout_strides(l, N, K, H, W, &g->ysn, &g->ysc);
}

static inline int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static size_t round16(size_t n) { return (n + 15) / 16 * 16; } /* floats: 64-byte steps */

/* Lanes i < 8 of row[s0 + i], zero where s0 + i lies outside [0, W)
 * (s0 >= -7); reads nothing outside the row. */
static inline vf load_cols(const float *row, int s0, int W)
{
#ifdef WG_AVX
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    if (s0 >= W) return _mm256_setzero_ps();
    if (s0 >= 0)
        return _mm256_maskload_ps(row + s0, _mm256_cmpgt_epi32(_mm256_set1_epi32(W - s0), iota));
    /* row[0 ..) into lanes -s0 ..: load, rotate up, clear the lanes below */
    const int n = W < 8 + s0 ? W : 8 + s0;
    __m256 v = _mm256_maskload_ps(row, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota));
    v = _mm256_permutevar8x32_ps(v, _mm256_add_epi32(iota, _mm256_set1_epi32(s0)));
    return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpgt_epi32(iota, _mm256_set1_epi32(-s0 - 1))));
#else
    vf r;
    for (int i = 0; i < 8; i++) r.f[i] = s0 + i >= 0 && s0 + i < W ? row[s0 + i] : 0.0f;
    return r;
#endif
}

/* row[i] = (or += when acc) lanes i < n of v (n <= 8). */
static inline void store_cols(float *row, int n, vf v, int acc)
{
#ifdef WG_AVX
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    if (acc) v = _mm256_add_ps(v, _mm256_maskload_ps(row, mask));
    _mm256_maskstore_ps(row, mask, v);
#else
    for (int i = 0; i < n; i++) row[i] = acc ? row[i] + v.f[i] : v.f[i];
#endif
}

/* ib[r][col][l] for r < nrows and columns col0 <= col < col1 (multiples of
 * 8; rows wp8 pixels apart) = the plane (image n0+l, channel c) of x at row
 * h0+r, column col-pad; zero outside the H x W plane and for images >= N. */
static void interleave(float *ib, const float *x, long sn, long sc, int c, int n0, int N, int H,
                       int W, int h0, int nrows, int pad, int col0, int col1, int wp8)
{
    const int nl = N - n0 < 8 ? N - n0 : 8;
    for (int r = 0; r < nrows; r++) {
        const int h = h0 + r;
        float *dst = ib + ((size_t)r * wp8 + col0) * 8;
        if (h < 0 || h >= H) {
            for (int i = 0; i < (col1 - col0) * 8; i += 8) v_st(dst + i, v_zero());
            continue;
        }
        const float *row = x + n0 * sn + c * sc + (long)h * W; /* lane l: + l*sn */
        for (int cb = col0; cb < col1; cb += 8, dst += 64) {
            const int s0 = cb - pad; /* source column of this block's first pixel */
            if (nl == 8 && s0 >= 0 && s0 + 8 <= W) {
                tr8(row + s0, (size_t)sn, dst, 8, 0);
                continue;
            }
            float t[64];
            for (int l = 0; l < 8; l++)
                v_st(t + l * 8, l < nl ? load_cols(row + l * sn, s0, W) : v_zero());
            tr8(t, 8, dst, 8, 0);
        }
    }
}

/* The plane (images n0+l < N, channel k) of y at rows h0 .. h0+nrows-1 below
 * H and columns w0 <= w < min(w1, W) = (or += when acc) ob[r][w][l] (rows
 * wp8 pixels apart). */
static void deinterleave(float *y, long sn, long sc, int k, int n0, int N, int H, int W, int h0,
                         int nrows, int w0, int w1, const float *ob, int wp8, int acc)
{
    const int nl = N - n0 < 8 ? N - n0 : 8;
    if (w1 > W) w1 = W;
    for (int r = 0; r < nrows && h0 + r < H; r++) {
        const float *src = ob + (size_t)r * wp8 * 8;
        float *row = y + n0 * sn + k * sc + (long)(h0 + r) * W;
        for (int cb = w0; cb < w1; cb += 8) {
            const int n = w1 - cb < 8 ? w1 - cb : 8;
            if (n == 8 && nl == 8) {
                tr8(src + (size_t)cb * 8, 8, row + cb, (size_t)sn, acc);
                continue;
            }
            float t[64];
            tr8(src + (size_t)cb * 8, 8, t, 8, 0);
            for (int l = 0; l < nl; l++) store_cols(row + l * sn + cb, n, v_ld(t + l * 8), acc);
        }
    }
}

/* A run of tile positions of one image group: tile rows i0 .. i1-1, from
 * column ja of the first to column jb-1 of the last, whose first tile is
 * column v0 (in tiles of 8 lanes) of the block's transformed buffers. */
typedef struct wg_seg {
    int grp, i0, i1, ja, jb, v0;
} wg_seg;

/* The next run of positions [*p, p1) of a block starting at pbase; 0 when done. */
static int next_seg(const wg_geom *g, long *p, long p1, long pbase, wg_seg *s)
{
    if (*p >= p1) return 0;
    const long q = *p / g->TW, per_group = (long)g->TH * g->TW;
    s->grp = (int)(q / g->TH);
    s->i0 = (int)(q % g->TH);
    s->ja = (int)(*p % g->TW);
    const long end = p1 < (s->grp + 1) * per_group ? p1 : (s->grp + 1) * per_group;
    s->i1 = (int)((end - 1) / g->TW % g->TH) + 1;
    s->jb = (int)((end - 1) % g->TW) + 1;
    s->v0 = (int)(*p - pbase);
    *p = end;
    return 1;
}

/* Columns [lo, hi) of tile row i of a run. */
static inline void seg_cols(const wg_geom *g, const wg_seg *s, int i, int *lo, int *hi)
{
    *lo = i == s->i0 ? s->ja : 0;
    *hi = i == s->i1 - 1 ? s->jb : g->TW;
}

/* Interleaved columns [col0, col1) a run's tiles read (input: halo of 2). */
static void seg_span(const wg_geom *g, const wg_seg *s, int halo, int *col0, int *col1)
{
    if (s->i1 - s->i0 > 1) {
        *col0 = 0;
        *col1 = g->wpx;
    } else {
        *col0 = s->ja * g->m / 8 * 8;
        *col1 = (s->jb * g->m + halo + 7) / 8 * 8;
    }
}

/* The input tiles of run sg: ib row 0 is input row i0*m - 1, column 0
 * input column -1; B^T d B of tile (i, j) goes to v[xi*vs + 8*t], t its
 * place in the run. */
static void in_tiles(const wg_geom *g, const wg_seg *sg, const float *ib, float *v, size_t vs)
{
    const int m = g->m, TW = g->TW;
    const size_t rs = (size_t)g->wp8 * 8;
    for (int i = sg->i0; i < sg->i1; i++) {
        int jlo, jhi;
        seg_cols(g, sg, i, &jlo, &jhi);
        for (int j = jlo; j < jhi; j++) {
            const float *p = ib + (size_t)(i - sg->i0) * m * rs + (size_t)j * m * 8;
            float *o = v + ((size_t)(i - sg->i0) * TW + j - sg->ja) * 8;
            vf d[6], t[36], e[6];
            if (m == 2) {
                for (int c = 0; c < 4; c++) { /* columns: t = B^T d */
                    for (int r = 0; r < 4; r++) d[r] = v_ld(p + r * rs + c * 8);
                    bt2(t + c, 4, d, 1);
                }
                for (int r = 0; r < 4; r++) { /* rows: (B^T d) B */
                    bt2(e, 1, t + r * 4, 1);
                    for (int c = 0; c < 4; c++) v_st(o + (r * 4 + c) * vs, e[c]);
                }
            } else {
                for (int c = 0; c < 6; c++) {
                    for (int r = 0; r < 6; r++) d[r] = v_ld(p + r * rs + c * 8);
                    bt4(t + c, 6, d, 1);
                }
                for (int r = 0; r < 6; r++) {
                    bt4(e, 1, t + r * 6, 1);
                    for (int c = 0; c < 6; c++) v_st(o + (r * 6 + c) * vs, e[c]);
                }
            }
        }
    }
}

/* The output-gradient tiles of run sg (m x m, no halo: ib row 0 is output
 * row i0*m, column 0 output column 0) -> A dY A^T, laid out as in_tiles. */
static void dy_tiles(const wg_geom *g, const wg_seg *sg, const float *ib, float *v, size_t vs)
{
    const int m = g->m, a = g->a, TW = g->TW;
    const size_t rs = (size_t)g->wp8 * 8;
    for (int i = sg->i0; i < sg->i1; i++) {
        int jlo, jhi;
        seg_cols(g, sg, i, &jlo, &jhi);
        for (int j = jlo; j < jhi; j++) {
            const float *p = ib + (size_t)(i - sg->i0) * m * rs + (size_t)j * m * 8;
            float *o = v + ((size_t)(i - sg->i0) * TW + j - sg->ja) * 8;
            vf d[4], t[24], e[6]; /* t: a x m */
            for (int c = 0; c < m; c++) {
                for (int r = 0; r < m; r++) d[r] = v_ld(p + r * rs + c * 8);
                if (m == 2) a2(t + c, m, d, 1);
                else a4(t + c, m, d, 1);
            }
            for (int r = 0; r < a; r++) {
                if (m == 2) a2(e, 1, t + r * m, 1);
                else a4(e, 1, t + r * m, 1);
                for (int c = 0; c < a; c++) v_st(o + (r * a + c) * vs, e[c]);
            }
        }
    }
}

/* Products of run sg (mk[xi*ms + 8*t], t a tile's place in the run) ->
 * output tiles A^T M A in ob: row 0 is output row i0*m, columns absolute. */
static void out_tiles(const wg_geom *g, const wg_seg *sg, const float *mk, size_t ms, float *ob)
{
    const int m = g->m, TW = g->TW;
    const size_t rs = (size_t)g->wp8 * 8;
    for (int i = sg->i0; i < sg->i1; i++) {
        int jlo, jhi;
        seg_cols(g, sg, i, &jlo, &jhi);
        for (int j = jlo; j < jhi; j++) {
            const float *p = mk + ((size_t)(i - sg->i0) * TW + j - sg->ja) * 8;
            float *o = ob + (size_t)(i - sg->i0) * m * rs + (size_t)j * m * 8;
            vf s[6], t[24], e[4]; /* t: m x a */
            if (m == 2) {
                for (int c = 0; c < 4; c++) {
                    for (int r = 0; r < 4; r++) s[r] = v_ld(p + (r * 4 + c) * ms);
                    at2(t + c, 4, s, 1);
                }
                for (int r = 0; r < 2; r++) {
                    at2(e, 1, t + r * 4, 1);
                    for (int c = 0; c < 2; c++) v_st(o + r * rs + c * 8, e[c]);
                }
            } else {
                for (int c = 0; c < 6; c++) {
                    for (int r = 0; r < 6; r++) s[r] = v_ld(p + (r * 6 + c) * ms);
                    at4(t + c, 6, s, 1);
                }
                for (int r = 0; r < 4; r++) {
                    at4(e, 1, t + r * 6, 1);
                    for (int c = 0; c < 4; c++) v_st(o + r * rs + c * 8, e[c]);
                }
            }
        }
    }
}

/* ---- weights ----
 * U[xi][kb][c][r] = (G g G^T)[xi] of kernel (k = 4 kb + r, c), zero for
 * k >= K: four output channels side by side for the GEMM micro-kernel.
 * flip: the kernel of the backward-data convolution, g'(k, c) = g(c, k)
 * turned 180 degrees, where w is (C, K, 3, 3) as stored (K, C here being
 * the swapped roles). */
static inline float wget(const float *w, int K, int C, int flip, int k, int c, int rs)
{
    return flip ? w[((long)c * K + k) * 9 + 8 - rs] : w[((long)k * C + c) * 9 + rs];
}

static void transform_weights(ssl_ctx *ctx, float *U, const float *w, int K, int C, int flip,
                              int m)
{
    const int a = m + 2, Kb = (K + 3) / 4;
    const float *G = g_matrix(m);
#pragma omp parallel for schedule(static) num_threads(ctx->n_threads)
    for (int kb = 0; kb < Kb; kb++)
        for (int c0 = 0; c0 < C; c0 += 2) { /* lanes: 4 k of c0, then 4 k of c0+1 */
            float in[9][8];
            for (int l = 0; l < 8; l++) {
                int k = kb * 4 + (l & 3), c = c0 + (l >> 2);
                for (int rs = 0; rs < 9; rs++)
                    in[rs][l] = k < K && c < C ? wget(w, K, C, flip, k, c, rs) : 0.0f;
            }
            vf g[9], t[18];
            for (int rs = 0; rs < 9; rs++) g[rs] = v_ld(in[rs]);
            for (int p = 0; p < a; p++) /* t = G g: a x 3 */
                for (int s = 0; s < 3; s++) {
                    vf acc = v_zero();
                    for (int r = 0; r < 3; r++) acc = v_fma(v_set1(G[p * 3 + r]), g[r * 3 + s], acc);
                    t[p * 3 + s] = acc;
                }
            for (int p = 0; p < a; p++)
                for (int q = 0; q < a; q++) { /* (t G^T)[p][q] */
                    vf acc = v_zero();
                    for (int s = 0; s < 3; s++) acc = v_fma(v_set1(G[q * 3 + s]), t[p * 3 + s], acc);
                    float *dst = U + (((size_t)(p * a + q) * Kb + kb) * C + c0) * 4;
                    if (c0 + 1 < C) {
                        v_st(dst, acc);
                    } else {
                        float tmp[8];
                        v_st(tmp, acc);
                        memcpy(dst, tmp, 4 * sizeof(float));
                    }
                }
        }
}

/* ---- GEMM micro-kernel ----
 * M (4 rows ldm apart, nv*8 columns) (+)= sum over n < len of
 *   u[n*ldu + r] (row r's factor) * v[n*ldv + 0 .. nv*8)
 * 12 accumulators in registers; acc: M's values are the starting sums. */
#ifdef WG_AVX
/* One kernel family per vector width: B bits (256 or 512), W floats a
 * vector, RC the asm register class that pins b in registers ("v" reaches
 * zmm16-31). ukr<B>_<NV>: M (4 rows, NV*W columns), 12 vector sums. */
#define WG_BCAST256(p) _mm256_broadcast_ss(p)
#define WG_BCAST512(p) _mm512_set1_ps(*(p))
#define UKR_ROW(B, R)                                                 \
    do {                                                              \
        __m##B a_ = WG_BCAST##B(u + (R));                             \
        c##R##0 = _mm##B##_fmadd_ps(a_, b0, c##R##0);                 \
        if (NV > 1) c##R##1 = _mm##B##_fmadd_ps(a_, b1, c##R##1);     \
        if (NV > 2) c##R##2 = _mm##B##_fmadd_ps(a_, b2, c##R##2);     \
    } while (0)
#define UKR_LOAD(B, W, R)                                                  \
    do {                                                                   \
        c##R##0 = _mm##B##_loadu_ps(mo + (R) * ldm);                       \
        if (NV > 1) c##R##1 = _mm##B##_loadu_ps(mo + (R) * ldm + (W));     \
        if (NV > 2) c##R##2 = _mm##B##_loadu_ps(mo + (R) * ldm + 2 * (W)); \
    } while (0)
#define UKR_STORE(B, W, R)                                                 \
    do {                                                                   \
        _mm##B##_storeu_ps(mo + (R) * ldm, c##R##0);                       \
        if (NV > 1) _mm##B##_storeu_ps(mo + (R) * ldm + (W), c##R##1);     \
        if (NV > 2) _mm##B##_storeu_ps(mo + (R) * ldm + 2 * (W), c##R##2); \
    } while (0)
#define UKR_DEF(B, W, RC, NV_)                                                           \
    static void ukr##B##_##NV_(int len, const float *u, size_t ldu, const float *v,      \
                               size_t ldv, float *mo, size_t ldm, int acc)               \
    {                                                                                    \
        const int NV = NV_;                                                              \
        __m##B c00 = _mm##B##_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00,  \
               c12 = c00, c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00,         \
               c32 = c00;                                                                \
        if (acc) {                                                                       \
            UKR_LOAD(B, W, 0); UKR_LOAD(B, W, 1); UKR_LOAD(B, W, 2); UKR_LOAD(B, W, 3);  \
        }                                                                                \
        for (int n = 0; n < len; n++) {                                                  \
            __m##B b0 = _mm##B##_loadu_ps(v), b1 = b0, b2 = b0;                          \
            if (NV > 1) b1 = _mm##B##_loadu_ps(v + (W));                                 \
            if (NV > 2) b2 = _mm##B##_loadu_ps(v + 2 * (W));                             \
            /* keeps b in registers: folded into each FMA they would cost 4x the loads */ \
            __asm__("" : "+" RC(b0));                                                    \
            if (NV > 1) __asm__("" : "+" RC(b1));                                        \
            if (NV > 2) __asm__("" : "+" RC(b2));                                        \
            UKR_ROW(B, 0); UKR_ROW(B, 1); UKR_ROW(B, 2); UKR_ROW(B, 3);                  \
            u += ldu;                                                                    \
            v += ldv;                                                                    \
        }                                                                                \
        UKR_STORE(B, W, 0); UKR_STORE(B, W, 1); UKR_STORE(B, W, 2); UKR_STORE(B, W, 3);  \
        (void)c01; (void)c02; (void)c11; (void)c12; (void)c21; (void)c22; (void)c31;     \
        (void)c32;                                                                       \
    }
UKR_DEF(256, 8, "x", 1)
#ifdef WG_AVX512
UKR_DEF(512, 16, "v", 1)
UKR_DEF(512, 16, "v", 2)
UKR_DEF(512, 16, "v", 3)
#else
UKR_DEF(256, 8, "x", 2)
UKR_DEF(256, 8, "x", 3)
#endif
#endif

/* 8-column units for the next micro-kernel call with rem columns left (a
 * multiple of 8): 3, but 2 + 2 rather than 3 + 1 for 32 (the 1-vector
 * kernel has a third of the 3-vector one's work per load); with AVX-512 the
 * same in 16-column vectors (6, 4 + 4 for 64, 4, 2), and 1 for a last 8. */
static inline int next_nv(int rem)
{
#ifdef WG_AVX512
    return rem >= 48 && rem != 64 ? 6 : rem >= 32 ? 4 : rem >= 16 ? 2 : 1;
#else
    return rem >= 24 && rem != 32 ? 3 : rem >= 16 ? 2 : 1;
#endif
}

static void ukr(int nv, int len, const float *u, size_t ldu, const float *v, size_t ldv,
                float *mo, size_t ldm, int acc)
{
#ifdef WG_AVX512
    if (nv == 6) ukr512_3(len, u, ldu, v, ldv, mo, ldm, acc);
    else if (nv == 4) ukr512_2(len, u, ldu, v, ldv, mo, ldm, acc);
    else if (nv == 2) ukr512_1(len, u, ldu, v, ldv, mo, ldm, acc);
    else ukr256_1(len, u, ldu, v, ldv, mo, ldm, acc);
#elif defined(WG_AVX)
    if (nv == 3) ukr256_3(len, u, ldu, v, ldv, mo, ldm, acc);
    else if (nv == 2) ukr256_2(len, u, ldu, v, ldv, mo, ldm, acc);
    else ukr256_1(len, u, ldu, v, ldv, mo, ldm, acc);
#else
    float s[4][24];
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < nv * 8; j++) s[r][j] = acc ? mo[r * ldm + j] : 0.0f;
    for (int n = 0; n < len; n++, u += ldu, v += ldv)
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < nv * 8; j++) s[r][j] += u[r] * v[j];
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < nv * 8; j++) mo[r * ldm + j] = s[r][j];
#endif
}

/* M (Kb*4 x T) = U (Kb x C x 4) V (C x T); T a multiple of 8. Rows of U in
 * slabs of about 128 KiB (L2), each slab swept over every column of V, so
 * that large U (512 x 512 channels) is read from memory once. */
static void gemm_block(int Kb, int C, int T, const float *U, const float *V, float *M)
{
    int slab = (int)((128 << 10) / ((size_t)C * 4 * sizeof(float)));
    if (slab < 1) slab = 1;
    for (int kb0 = 0; kb0 < Kb; kb0 += slab) {
        const int kb1 = kb0 + slab < Kb ? kb0 + slab : Kb;
        for (int t0 = 0, nv; t0 < T; t0 += nv * 8) {
            nv = next_nv(T - t0);
            for (int kb = kb0; kb < kb1; kb++)
                ukr(nv, C, U + (size_t)kb * C * 4, 4, V + t0, (size_t)T,
                    M + (size_t)kb * 4 * T + t0, (size_t)T, 0);
        }
    }
}

/* Tile positions (8 tiles each) per forward block: the block's transformed
 * inputs and products, alpha^2 (C + K) floats a tile, about `budget` bytes
 * (default_budget), and at least 3 positions: 24 tiles, the micro-kernel's
 * width. */
static long block_positions(const wg_geom *g, int Kp, long budget)
{
    long per = 8L * g->a * g->a * (g->C + Kp) * (long)sizeof(float);
    long P = budget / per;
    if (P < 3) P = 3;
    return P < g->npos ? P : g->npos;
}

/* Tile rows a run of P positions can touch: ib needs (that * m + 2) rows. */
static int run_rows(const wg_geom *g, long P)
{
    long r = (P + g->TW - 1) / g->TW + 1;
    return r < g->TH ? (int)r : g->TH;
}

/* Input channel c of run sg into v (channel c's row of the block's V):
 * interleave the run's rows of x, then B^T d B. */
static void transform_input(const wg_geom *g, const wg_seg *sg, float *ib, const float *x, int c,
                            float *v, size_t vs)
{
    int col0, col1;
    seg_span(g, sg, 2, &col0, &col1);
    interleave(ib, x, g->xsn, g->xsc, c, sg->grp * 8, g->N, g->H, g->W, sg->i0 * g->m - 1,
               (sg->i1 - sg->i0) * g->m + 2, 1, col0, col1, g->wp8);
    in_tiles(g, sg, ib, v + (size_t)sg->v0 * 8, vs);
}

/* Output channel k of run sg from mk (channel k's row of the block's M):
 * A^T M A into ob, then into y (+= when acc). */
static void output_tiles(const wg_geom *g, const wg_seg *sg, const float *mk, size_t ms,
                         float *ob, float *y, int k, int acc)
{
    const int m = g->m;
    out_tiles(g, sg, mk + (size_t)sg->v0 * 8, ms, ob);
    for (int i = sg->i0; i < sg->i1; i++) {
        int jlo, jhi;
        seg_cols(g, sg, i, &jlo, &jhi);
        deinterleave(y, g->ysn, g->ysc, k, sg->grp * 8, g->N, g->H, g->W, i * m, m, jlo * m,
                     jhi * m, ob + (size_t)(i - sg->i0) * m * g->wp8 * 8, g->wp8, acc);
    }
}

/* ---- forward (and backward data) ---- */
static int wg_fwd(ssl_ctx *ctx, int m, long budget, float *y, const float *x, const float *w,
                  int flip, int acc, int N, int C, int K, int H, int W, ssl_layout layout)
{
    wg_geom g;
    geom_init(&g, m, N, C, K, H, W, layout);
    const int A2 = g.a * g.a, Kb = (K + 3) / 4, Kp = Kb * 4, nt = ctx->n_threads;
    const long P = block_positions(&g, Kp, budget);
    const size_t Tmax = (size_t)P * 8;
    const size_t u_sz = round16((size_t)A2 * Kp * C);
    const size_t v_sz = round16((size_t)A2 * C * Tmax), m_sz = round16((size_t)A2 * Kp * Tmax);
    const size_t ib_sz = round16((size_t)(run_rows(&g, P) * m + 2) * g.wp8 * 8);
    const size_t per = v_sz + m_sz + ib_sz;
    float *s = ssl_ctx_scratch(ctx, sizeof(float) * (u_sz + per * nt));
    if (!s) return -1;
    float *U = s;
    transform_weights(ctx, U, w, K, C, flip, m);
    const long nblocks = (g.npos + P - 1) / P;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (long b = 0; b < nblocks; b++) {
        float *V = s + u_sz + per * thread_id(), *M = V + v_sz, *ib = M + m_sz;
        const long p0 = b * P, p1 = p0 + P < g.npos ? p0 + P : g.npos;
        const int T = (int)(p1 - p0) * 8;
        wg_seg sg;
        for (int c = 0; c < C; c++)
            for (long p = p0; next_seg(&g, &p, p1, p0, &sg);)
                transform_input(&g, &sg, ib, x, c, V + (size_t)c * T, (size_t)C * T);
        for (int xi = 0; xi < A2; xi++)
            gemm_block(Kb, C, T, U + (size_t)xi * Kp * C, V + (size_t)xi * C * T,
                       M + (size_t)xi * Kp * T);
        for (int k = 0; k < K; k++)
            for (long p = p0; next_seg(&g, &p, p1, p0, &sg);)
                output_tiles(&g, &sg, M + (size_t)k * T, (size_t)Kp * T, ib, y, k, acc);
    }
    return 0;
}

/* ---- backward weights ---- */

/* dst (T x ld, rows ld apart) = src^T, src being `rows` rows of T floats:
 * columns up to `rows` rounded up to 8 are written (zero past rows). T is a
 * multiple of 8. */
static void transpose_to(float *dst, int ld, const float *src, int rows, int T)
{
    for (int r0 = 0; r0 < rows; r0 += 8)
        for (int t0 = 0; t0 < T; t0 += 8) {
            if (r0 + 8 <= rows) {
                tr8(src + (size_t)r0 * T + t0, (size_t)T, dst + (size_t)t0 * ld + r0, (size_t)ld, 0);
                continue;
            }
            float t[64];
            for (int r = r0; r < r0 + 8; r++)
                v_st(t + (r - r0) * 8, r < rows ? v_ld(src + (size_t)r * T + t0) : v_zero());
            tr8(t, 8, dst + (size_t)t0 * ld + r0, (size_t)ld, 0);
        }
}

/* dst (T x 4) = the first `rows` (<= 4) rows of src (rows of T floats)
 * transposed, zero past rows: a micro-kernel panel read sequentially. */
static void pack4(float *dst, const float *src, int rows, int T)
{
#ifdef WG_AVX
    for (int t0 = 0; t0 < T; t0 += 8, dst += 32) {
        __m256 r[4];
        for (int i = 0; i < 4; i++)
            r[i] = i < rows ? _mm256_loadu_ps(src + (size_t)i * T + t0) : _mm256_setzero_ps();
        __m256 a0 = _mm256_unpacklo_ps(r[0], r[1]), a1 = _mm256_unpackhi_ps(r[0], r[1]),
               a2 = _mm256_unpacklo_ps(r[2], r[3]), a3 = _mm256_unpackhi_ps(r[2], r[3]);
        __m256 v0 = _mm256_shuffle_ps(a0, a2, 0x44), v1 = _mm256_shuffle_ps(a0, a2, 0xEE),
               v2 = _mm256_shuffle_ps(a1, a3, 0x44), v3 = _mm256_shuffle_ps(a1, a3, 0xEE);
        /* v0 = tiles t0 | t0+4, v1 = t0+1 | t0+5, ... (4 rows each) */
        _mm256_storeu_ps(dst, _mm256_permute2f128_ps(v0, v1, 0x20));
        _mm256_storeu_ps(dst + 8, _mm256_permute2f128_ps(v2, v3, 0x20));
        _mm256_storeu_ps(dst + 16, _mm256_permute2f128_ps(v0, v1, 0x31));
        _mm256_storeu_ps(dst + 24, _mm256_permute2f128_ps(v2, v3, 0x31));
    }
#else
    for (int t = 0; t < T; t++)
        for (int i = 0; i < 4; i++) dst[t * 4 + i] = i < rows ? src[(size_t)i * T + t] : 0.0f;
#endif
}

/* Each thread sums the products of its own run of tiles into its own dW'
 * (alpha^2 x K x C): per block of tiles, x and dy are transformed, each
 * slice xi is transposed (tiles become the GEMM's inner dimension) and
 * multiplied into dW'[xi]. At the end dw += G^T (sum of the threads' dW',
 * in thread order) G.
 * With split_k the threads split the output channels instead: each walks
 * all the tiles (so each transforms all of x) for its own rows of one
 * shared dW', whose copies per thread would be the largest scratch of a
 * wide network (2 x 38 MB at 512 channels); the sums then do not depend on
 * the thread count. */
static int wg_dw(ssl_ctx *ctx, int m, long budget, int split_k, float *dw, const float *dy,
                 const float *x, const ssl_conv_desc *d)
{
    wg_geom g;
    geom_init(&g, m, d->N, d->C, d->K, d->H, d->W, d->layout);
    const int a = g.a, A2 = a * a, C = d->C, K = d->K, nt = ctx->n_threads;
    /* dW' rows: Kb blocks of 4; columns: C rounded up to 8, then a stride
     * 8 floats longer, off powers of two (a 512-byte stride keeps the
     * micro-kernel's rows in a few L1 sets: 30% slower at 256 channels) */
    const int Kb = (K + 3) / 4, Cv = (C + 7) / 8 * 8, Cs = Cv + 8;
    long P = budget / (8L * A2 * (C + K) * (long)sizeof(float));
    if (P < 3) P = 3;
    if (P > g.npos) P = g.npos;
    const size_t Tmax = (size_t)P * 8;
    const size_t x_sz = round16((size_t)A2 * C * Tmax), y_sz = round16((size_t)A2 * K * Tmax);
    const size_t xt_sz = round16(Tmax * Cs), yt_sz = round16(Tmax * 4 * Kb);
    const size_t w_sz = round16((size_t)A2 * Kb * 4 * Cs);
    const size_t ib_sz = round16((size_t)(run_rows(&g, P) * m + 2) * g.wp8 * 8);
    const size_t w_off = x_sz + y_sz + xt_sz + yt_sz; /* a thread's dW' in its share */
    /* auto: split K where the per-thread copies would add 16 MB or more */
    if (split_k == 0)
        split_k = nt > 1 && Kb >= nt && w_sz * sizeof(float) * (size_t)(nt - 1) >= (16u << 20);
    else
        split_k = split_k > 0;
    const size_t per = w_off + (split_k ? 0 : w_sz) + ib_sz;
    float *s = ssl_ctx_scratch(ctx, sizeof(float) * (per * nt + (split_k ? w_sz : 0)));
    if (!s) return -1;
    float *const shared_w = s + per * nt; /* split_k: the one dW' */
    const float *G = g_matrix(m);
#pragma omp parallel num_threads(nt)
    {
        const int tid = thread_id();
#ifdef _OPENMP
        const int nth = omp_get_num_threads();
#else
        const int nth = 1;
#endif
        float *X = s + per * tid, *D = X + x_sz, *XT = D + y_sz, *DT = XT + xt_sz;
        float *Wt = split_k ? shared_w : X + w_off, *ib = split_k ? X + w_off : Wt + w_sz;
        int kb0 = 0, kb1 = Kb;
        long a0 = g.npos * tid / nth, a1 = g.npos * (tid + 1) / nth;
        if (split_k) { /* rows kb0.. of every dW'[xi], all the tiles */
            kb0 = Kb * tid / nth;
            kb1 = Kb * (tid + 1) / nth;
            a0 = 0;
            a1 = g.npos;
            for (int xi = 0; xi < A2; xi++)
                memset(Wt + ((size_t)xi * Kb + kb0) * 4 * Cs, 0,
                       sizeof(float) * (size_t)(kb1 - kb0) * 4 * Cs);
        } else {
            memset(Wt, 0, sizeof(float) * w_sz);
        }
        const int k0 = kb0 * 4, k1 = kb1 * 4 < K ? kb1 * 4 : K;
        for (long p0 = a0; p0 < a1; p0 += P) {
            const long p1 = p0 + P < a1 ? p0 + P : a1;
            const int T = (int)(p1 - p0) * 8;
            wg_seg sg;
            for (int c = 0; c < C; c++)
                for (long p = p0; next_seg(&g, &p, p1, p0, &sg);)
                    transform_input(&g, &sg, ib, x, c, X + (size_t)c * T, (size_t)C * T);
            for (int k = k0; k < k1; k++)
                for (long p = p0; next_seg(&g, &p, p1, p0, &sg);) {
                    int col0, col1;
                    seg_span(&g, &sg, 0, &col0, &col1);
                    interleave(ib, dy, g.ysn, g.ysc, k, sg.grp * 8, g.N, g.H, g.W, sg.i0 * m,
                               (sg.i1 - sg.i0) * m, 0, col0, col1, g.wp8);
                    dy_tiles(&g, &sg, ib, D + (size_t)k * T + (size_t)sg.v0 * 8, (size_t)K * T);
                }
            for (int xi = 0; xi < A2; xi++) { /* dW'[xi] (K x C) += D[xi] X[xi]^T */
                transpose_to(XT, Cs, X + (size_t)xi * C * T, C, T);
                const float *Dx = D + (size_t)xi * K * T;
                float *wx = Wt + (size_t)xi * Kb * 4 * Cs;
                for (int kb = kb0; kb < kb1; kb++) {
                    float *panel = DT + (size_t)kb * 4 * T;
                    pack4(panel, Dx + (size_t)kb * 4 * T, K - kb * 4 < 4 ? K - kb * 4 : 4, T);
                    for (int c0 = 0, nv; c0 < Cv; c0 += nv * 8) {
                        nv = next_nv(Cv - c0);
                        ukr(nv, T, panel, 4, XT + c0, (size_t)Cs, wx + (size_t)kb * 4 * Cs + c0,
                            (size_t)Cs, 1);
                    }
                }
            }
        }
#pragma omp barrier
        /* dw[k][c] += G^T dW'[.][k][c] G, 8 input channels a vector */
#pragma omp for schedule(static)
        for (int k = 0; k < K; k++)
            for (int c0 = 0; c0 < C; c0 += 8) {
                vf t[18], mv[36];
                for (int xi = 0; xi < A2; xi++) {
                    const size_t o = ((size_t)xi * Kb * 4 + k) * Cs + c0;
                    if (split_k) {
                        mv[xi] = v_ld(shared_w + o);
                        continue;
                    }
                    const float *p = s + w_off + o;
                    mv[xi] = v_ld(p);
                    for (int th = 1; th < nth; th++) mv[xi] = v_add(mv[xi], v_ld(p + per * th));
                }
                for (int r = 0; r < 3; r++) /* t = G^T M: 3 x a */
                    for (int q = 0; q < a; q++) {
                        vf acc = v_zero();
                        for (int p = 0; p < a; p++) acc = v_fma(v_set1(G[p * 3 + r]), mv[p * a + q], acc);
                        t[r * a + q] = acc;
                    }
                float out[9][8];
                for (int r = 0; r < 3; r++)
                    for (int sc = 0; sc < 3; sc++) {
                        vf acc = v_zero();
                        for (int q = 0; q < a; q++) acc = v_fma(v_set1(G[q * 3 + sc]), t[r * a + q], acc);
                        v_st(out[r * 3 + sc], acc);
                    }
                for (int l = 0; l < 8 && c0 + l < C; l++)
                    for (int rs = 0; rs < 9; rs++) dw[((size_t)k * C + c0 + l) * 9 + rs] += out[rs][l];
            }
    }
    return 0;
}

/* ---- public ---- */
/* Measured on the 2-core AVX2 machine (bench/winograd_layers.c and one-thread
 * runs): F(4x4,3x3) beats oneDNN and im2col + BLAS from 16 channels in and out
 * on every ResNet-18 layer, forward and backward; with 8 channels the
 * backward loses to oneDNN. Vectors span 8 images, so a batch under 8 wastes
 * most lanes (at N = 4 it only ties). */
int ssl_winograd_fast(void)
{
#if defined(__AVX2__) && defined(__FMA__)
    return 1;
#else
    return 0;
#endif
}

int ssl_winograd_suits(const ssl_conv_desc *d)
{
    if (d->R != 3 || d->S != 3 || d->stride != 1 || d->pad != 1) return 0;
    if (d->OH != d->H || d->OW != d->W) return 0;
    return d->C >= 16 && d->K >= 16 && d->N >= 8;
}

/* The tile with fewer multiplications for the plane (partial edge tiles
 * count whole): 4 but for planes of 2 x 2 and smaller, where F(2,3)'s single
 * tile does less; at a tie (5x5, 6x6) 2, whose transforms are cheaper and
 * more accurate. */
int ssl_winograd_tile(const ssl_conv_desc *d)
{
    long m2 = 16L * ((d->H + 1) / 2) * ((d->W + 1) / 2);
    long m4 = 36L * ((d->H + 3) / 4) * ((d->W + 3) / 4);
    return m4 < m2 ? 4 : 2;
}

/* Bytes of transformed tiles per thread and block by default: as many as
 * U (alpha^2 K C floats, read once per block; for the weight gradient the
 * partial sums dW', as large, are updated once per block), so that this
 * traffic costs no more than the tiles'; at least 768 KiB (small layers keep
 * their blocks about in L2: measured best between 512 KiB and 1 MiB, 2 MiB
 * is 20% slower at 16 and 32 channels), at most 16 MiB. */
static long default_budget(int m, const ssl_conv_desc *d)
{
    const long lo = 768L << 10, hi = 16L << 20;
    long u = (long)(m + 2) * (m + 2) * d->K * d->C * (long)sizeof(float);
    return u < lo ? lo : u > hi ? hi : u;
}

/* The tile and block budget for d; 0, or SSL_ESHAPE (ctx->failed, as for
 * scratch) when d is not a 3x3, stride 1, pad 1 convolution. */
static int resolve(ssl_ctx *ctx, const ssl_winograd_opts *o, const ssl_conv_desc *d, int *m,
                   long *budget)
{
    if (d->R != 3 || d->S != 3 || d->stride != 1 || d->pad != 1 || d->OH != d->H ||
        d->OW != d->W) {
        ctx->failed = SSL_ESHAPE;
        return ssl_ctx_fail(ctx, SSL_ESHAPE, "winograd: not a 3x3 stride-1 pad-1 convolution "
                            "(%dx%d stride %d pad %d)", d->R, d->S, d->stride, d->pad);
    }
    *m = o && o->tile ? o->tile : ssl_winograd_tile(d);
    if (*m != 2) *m = 4;
    *budget = o && o->block_bytes > 0 ? o->block_bytes : default_budget(*m, d);
    return 0;
}

void ssl_winograd_conv_fwd_opts(ssl_ctx *ctx, const ssl_winograd_opts *o, float *y,
                                const float *x, const float *w, const ssl_conv_desc *d)
{
    int m = 4;
    long budget = 0;
    if (resolve(ctx, o, d, &m, &budget)) return;
    wg_fwd(ctx, m, budget, y, x, w, 0, 0, d->N, d->C, d->K, d->H, d->W, d->layout);
}

void ssl_winograd_conv_bwd_opts(ssl_ctx *ctx, const ssl_winograd_opts *o, float *dx, float *dw,
                                const float *dy, const float *x, const float *w,
                                const ssl_conv_desc *d)
{
    int m = 4;
    long budget = 0;
    if (resolve(ctx, o, d, &m, &budget)) return;
    /* dx: the forward of dy with the kernel flipped and C, K swapped, added */
    if (dx && wg_fwd(ctx, m, budget, dx, dy, w, 1, 1, d->N, d->K, d->C, d->H, d->W, d->layout))
        return;
    wg_dw(ctx, m, budget, o ? o->split_k : 0, dw, dy, x, d);
}

void ssl_winograd_conv_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                           const ssl_conv_desc *d)
{
    ssl_winograd_conv_fwd_opts(ctx, NULL, y, x, w, d);
}

void ssl_winograd_conv_bwd(ssl_ctx *ctx, float *dx, float *dw, const float *dy, const float *x,
                           const float *w, const ssl_conv_desc *d)
{
    ssl_winograd_conv_bwd_opts(ctx, NULL, dx, dw, dy, x, w, d);
}
