/* sRGB <-> CIE Lab (D65) as skimage.color, the quantized ab space of the
 * colorization method, and the decoder pieces it shares with inpainting. */
#include "lab.h"
#include "selfsup/graph_dense.h"

#include <math.h>
#include <string.h>

/* skimage.color.colorconv.xyz_from_rgb (sRGB primaries, D65) */
static const double M[3][3] = {{0.412453, 0.357580, 0.180423},
                               {0.212671, 0.715160, 0.072169},
                               {0.019334, 0.119193, 0.950227}};
static const double WHITE[3] = {0.95047, 1.0, 1.08883};

static double lab_f(double t) { return t > 0.008856 ? cbrt(t) : 7.787 * t + 16.0 / 116.0; }

static double lab_finv(double f)
{
    return f > 0.2068966 ? f * f * f : (f - 16.0 / 116.0) / 7.787; /* skimage's threshold */
}

double ssl_srgb_linear(double c) { return c > 0.04045 ? pow((c + 0.055) / 1.055, 2.4) : c / 12.92; }

static double srgb_gamma(double c) { return c > 0.0031308 ? 1.055 * pow(c, 1 / 2.4) - 0.055 : 12.92 * c; }

double ssl_lab_lightness_linear(double r, double g, double b)
{
    return 116.0 * lab_f((M[1][0] * r + M[1][1] * g + M[1][2] * b) / WHITE[1]) - 16.0;
}

void ssl_rgb_to_lab(double r, double g, double b, double lab[3])
{
    double lin[3] = {ssl_srgb_linear(r), ssl_srgb_linear(g), ssl_srgb_linear(b)}, f[3];
    for (int i = 0; i < 3; i++)
        f[i] = lab_f((M[i][0] * lin[0] + M[i][1] * lin[1] + M[i][2] * lin[2]) / WHITE[i]);
    lab[0] = 116.0 * f[1] - 16.0;
    lab[1] = 500.0 * (f[0] - f[1]);
    lab[2] = 200.0 * (f[1] - f[2]);
}

void ssl_lab_to_rgb(double L, double a, double b, double rgb[3])
{
    /* M^-1 by cofactors (skimage: rgb_from_xyz = linalg.inv(xyz_from_rgb)) */
    double inv[3][3], det = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            inv[j][i] = M[(i + 1) % 3][(j + 1) % 3] * M[(i + 2) % 3][(j + 2) % 3] -
                        M[(i + 1) % 3][(j + 2) % 3] * M[(i + 2) % 3][(j + 1) % 3];
    for (int j = 0; j < 3; j++) det += M[0][j] * inv[j][0];
    double fy = (L + 16.0) / 116.0, fz = fy - b / 200.0;
    double f[3] = {fy + a / 500.0, fy, fz < 0 ? 0 : fz}, xyz[3];
    for (int i = 0; i < 3; i++) xyz[i] = lab_finv(f[i]) * WHITE[i];
    for (int i = 0; i < 3; i++) {
        double c = (inv[i][0] * xyz[0] + inv[i][1] * xyz[1] + inv[i][2] * xyz[2]) / det;
        c = srgb_gamma(c > 0 ? c : 0);
        rgb[i] = c < 0 ? 0 : c > 1 ? 1 : c;
    }
}

/* floor(v / 10 + 1/2): the nearest grid index (ties up) */
static int grid_index(double v) { return (int)floor(v / SSL_AB_GRID + 0.5); }

static int cell_of(int i, int j)
{
    if (i < -SSL_AB_HALF || i > SSL_AB_HALF || j < -SSL_AB_HALF || j > SSL_AB_HALF) return -1;
    return (i + SSL_AB_HALF) * SSL_AB_SIDE + (j + SSL_AB_HALF);
}

void ssl_ab_bins_gamut(ssl_ab_bins *q)
{
    uint8_t hit[SSL_AB_MAX_BINS];
    memset(hit, 0, sizeof hit);
    for (int axis = 0; axis < 3; axis++)
        for (int side = 0; side < 2; side++)
            for (int u = 0; u < 256; u++)
                for (int v = 0; v < 256; v++) {
                    double c[3], lab[3];
                    c[axis] = side;
                    c[(axis + 1) % 3] = u / 255.0;
                    c[(axis + 2) % 3] = v / 255.0;
                    ssl_rgb_to_lab(c[0], c[1], c[2], lab);
                    int k = cell_of(grid_index(lab[1]), grid_index(lab[2]));
                    if (k >= 0) hit[k] = 1;
                }
    q->n = 0;
    for (int k = 0; k < SSL_AB_MAX_BINS; k++) {
        q->cell[k] = hit[k] ? (int16_t)q->n : -1;
        if (hit[k]) {
            q->center[q->n][0] = (float)(SSL_AB_GRID * (k / SSL_AB_SIDE - SSL_AB_HALF));
            q->center[q->n][1] = (float)(SSL_AB_GRID * (k % SSL_AB_SIDE - SSL_AB_HALF));
            q->n++;
        }
    }
}

int ssl_ab_bins_set(ssl_ab_bins *q, const float *centers, int n)
{
    if (n < 1 || n > SSL_AB_MAX_BINS) return 0;
    for (int k = 0; k < SSL_AB_MAX_BINS; k++) q->cell[k] = -1;
    for (int t = 0; t < n; t++) {
        float a = centers[2 * t], b = centers[2 * t + 1];
        int i = grid_index(a), j = grid_index(b), k = cell_of(i, j);
        if (k < 0 || a != (float)(SSL_AB_GRID * i) || b != (float)(SSL_AB_GRID * j) || q->cell[k] >= 0)
            return 0;
        q->cell[k] = (int16_t)t;
        q->center[t][0] = a;
        q->center[t][1] = b;
    }
    q->n = n;
    return 1;
}

int ssl_ab_bin(const ssl_ab_bins *q, float a, float b)
{
    int k = cell_of(grid_index(a), grid_index(b));
    if (k >= 0 && q->cell[k] >= 0) return q->cell[k];
    int best = 0;
    double bd = INFINITY;
    for (int t = 0; t < q->n; t++) {
        double da = a - q->center[t][0], db = b - q->center[t][1], d = da * da + db * db;
        if (d < bd) {
            bd = d;
            best = t;
        }
    }
    return best;
}

int ssl_encoder_halvings(const ssl_encoder *enc, int side, int *sizes)
{
    int k = enc->cfg.resnet.stem == SSL_STEM_SMALL ? 3 : 5; /* layer2..4 (+ conv1 and the pool) */
    sizes[0] = side;
    for (int i = 0; i < k; i++) sizes[i + 1] = (sizes[i] + 1) / 2;
    return k;
}

ssl_tensor *ssl_upconv(ssl_graph *g, ssl_tensor *x, ssl_tensor *w, ssl_tensor *b, int out)
{
    if (!x) return NULL;
    int s = x->shape[2];
    if (x->ndim != 4 || x->shape[3] != s || (out != 2 * s && out != 2 * s - 1)) {
        ssl_ctx_fail(g->ctx, SSL_ESHAPE, "decoder: cannot grow a %dx%d map to %dx%d with a stride-2 step",
                     x->shape[2], x->shape[3], out, out);
        return NULL;
    }
    return out == 2 * s ? ssl_op_conv_transpose2d(g, x, w, b, 2, 1, 0)
                        : ssl_op_conv_transpose2d(g, x, w, b, 2, 2, 1);
}

void ssl_init_normal(float *w, long n, float std, ssl_rng *rng)
{
    for (long i = 0; i < n; i++) w[i] = std * ssl_rng_normal(rng);
}
