/* PyTorch parity of the ResNet encoders, the projection head and NT-Xent.
 *
 * Goldens come from tests/torch/gen_resnet.py (torchvision's ResNet class):
 * a ResNet-18 (width 8, small stem, 1 channel, 8 x 16x16 images) and a
 * ResNet-50 (width 4, ImageNet stem, 3 channels, 4 x 64x64 images), each with
 * a Linear-BN-ReLU-Linear head and NT-Xent at T = 0.5, one training step.
 * Every state_dict tensor is copied by name into our registries (the
 * name-compatibility check, both ways), then features, loss, every parameter
 * gradient, the running stats after the step and the eval-mode features are
 * compared, on the cpu and ref backends.
 *
 * The goldens are float64 results of the float32 state, so they are the exact
 * answer; the generator keeps only draws on which PyTorch's own float32 run
 * stays within a third of these tolerances (see TOL in gen_resnet.py):
 *   features, projection, eval features: atol 1e-4, rtol 1e-3
 *   loss: rtol 1e-5 (ResNet-18), 1e-4 (ResNet-50)
 *   gradients, per tensor: atol 1e-6 + 1e-4 * max|grad|, rtol 1e-3 (ResNet-18);
 *     atol 1e-6 + 1e-3 * max|grad|, rtol 1e-2 (ResNet-50: 50 layers of batch
 *     statistics over few values; float32 PyTorch is no closer)
 *   running stats: atol 1e-5, rtol 1e-4; num_batches_tracked exact. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "golden.h"
#include "selfsup/io.h"
#include "selfsup/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long entry_numel(const ssl_st_entry *e)
{
    long n = 1;
    for (int d = 0; d < e->ndim; d++) n *= (long)e->shape[d];
    return n;
}

/* The golden F32 tensor `name` of n values, or NULL (and a failed CHECK). */
static const float *golden(const ssl_st_file *f, const char *name, long n)
{
    const ssl_st_entry *e = ssl_st_find(f, name);
    CHECK(e && e->dtype == SSL_DT_F32 && entry_numel(e) == n,
          "golden '%s' missing, not F32 or not %ld values", name, n);
    return e && e->dtype == SSL_DT_F32 && entry_numel(e) == n ? e->data : NULL;
}

static int same_shape(const ssl_st_entry *e, int ndim, const int64_t *shape)
{
    if (e->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (e->shape[d] != shape[d]) return 0;
    return 1;
}

/* Copies every parameter, buffer and counter of r from f by name; each must
 * exist with the same dtype and shape. Returns the number of problems, each
 * reported on stderr when `what` is not NULL. */
static int copy_state(ssl_registry *r, const ssl_st_file *f, const char *what)
{
    int bad = 0;
    for (int i = 0; i < r->n_params + r->n_buffers; i++) {
        int is_p = i < r->n_params;
        const ssl_param *p = is_p ? &r->params[i] : NULL;
        const ssl_buffer *b = is_p ? NULL : &r->buffers[i - r->n_params];
        const char *name = is_p ? p->name : b->name;
        const ssl_st_entry *e = ssl_st_find(f, name);
        int ok = e && e->dtype == SSL_DT_F32 &&
                 same_shape(e, is_p ? p->ndim : b->ndim, is_p ? p->shape : b->shape);
        if (!ok && what)
            fprintf(stderr, "%s: '%s' missing in the golden file or of another dtype/shape\n",
                    what, name);
        if (ok) memcpy(is_p ? p->data : b->data, e->data, e->nbytes);
        bad += !ok;
    }
    for (int i = 0; i < r->n_counters; i++) {
        const ssl_st_entry *e = ssl_st_find(f, r->counters[i].name);
        int ok = e && e->dtype == SSL_DT_I64 && entry_numel(e) == 1;
        if (!ok && what)
            fprintf(stderr, "%s: counter '%s' missing or not one I64\n", what, r->counters[i].name);
        if (ok) memcpy(r->counters[i].value, e->data, sizeof(int64_t));
        bad += !ok;
    }
    return bad;
}

static int in_registry(const ssl_registry *r, const char *name)
{
    if (ssl_registry_find(r, name, NULL)) return 1;
    for (int i = 0; i < r->n_counters; i++)
        if (!strcmp(r->counters[i].name, name)) return 1;
    return 0;
}

/* Golden entries that are results, not state_dict tensors. */
static int is_result(const char *name)
{
    static const char *const exact[] = { "input", "features", "projection", "loss",
                                         "eval_features" };
    if (!strncmp(name, "grad.", 5) || !strncmp(name, "after.", 6)) return 1;
    for (size_t i = 0; i < sizeof exact / sizeof *exact; i++)
        if (!strcmp(name, exact[i])) return 1;
    return 0;
}

/* See the header comment. */
typedef struct tolerances {
    double grad_atol_of_max, grad_rtol, loss_rtol;
} tolerances;

static double max_abs(const float *a, long n)
{
    double m = 0;
    for (long i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

/* Every parameter gradient; *worst gets the largest tolerance ratio. */
static void compare_grads(const ssl_registry *r, const ssl_st_file *f, const char *what,
                          const tolerances *tol, double *worst)
{
    char key[300], msg[400];
    for (int i = 0; i < r->n_params; i++) {
        const ssl_param *p = &r->params[i];
        snprintf(key, sizeof key, "grad.%s", p->name);
        const float *ref = golden(f, key, p->numel);
        if (!ref) continue;
        snprintf(msg, sizeof msg, "%s %s", what, key);
        double atol = 1e-6 + tol->grad_atol_of_max * max_abs(ref, p->numel);
        CHECK_CLOSE(p->grad, ref, p->numel, atol, tol->grad_rtol, msg);
        double d = check_close_ratio(p->grad, ref, p->numel, atol, tol->grad_rtol, NULL);
        if (!(d <= *worst)) *worst = d;
    }
}

static void compare_after(const ssl_registry *r, const ssl_st_file *f, const char *what)
{
    char key[300], msg[400];
    for (int i = 0; i < r->n_buffers; i++) {
        const ssl_buffer *b = &r->buffers[i];
        snprintf(key, sizeof key, "after.%s", b->name);
        const float *ref = golden(f, key, b->numel);
        snprintf(msg, sizeof msg, "%s %s", what, key);
        if (ref) CHECK_CLOSE(b->data, ref, b->numel, 1e-5, 1e-4, msg);
    }
    for (int i = 0; i < r->n_counters; i++) {
        snprintf(key, sizeof key, "after.%s", r->counters[i].name);
        const ssl_st_entry *e = ssl_st_find(f, key);
        CHECK(e && e->dtype == SSL_DT_I64 && entry_numel(e) == 1, "%s: '%s' missing", what, key);
        if (e && e->dtype == SSL_DT_I64 && entry_numel(e) == 1)
            CHECK(*r->counters[i].value == *(const int64_t *)e->data, "%s %s: %lld vs %lld",
                  what, key, (long long)*r->counters[i].value, (long long)*(const int64_t *)e->data);
    }
}

static int meta_int(const ssl_st_file *f, const char *key)
{
    const char *v = ssl_st_meta(f, key);
    CHECK(v != NULL, "golden metadata '%s' missing", key);
    return v ? atoi(v) : 0;
}

/* One training step of encoder + head + NT-Xent on `be`, against torch. */
static void test_model(const char *file, const ssl_backend *be, const tolerances *tol)
{
    ssl_st_file f;
    if (!golden_load(&f, file, "gen_resnet.py")) return;
    char what[128], err[SSL_ERR_LEN] = "";
    snprintf(what, sizeof what, "%s/%s", file, be->name);
    const char *stem = ssl_st_meta(&f, "stem"), *temp = ssl_st_meta(&f, "temperature");
    ssl_resnet_config cfg = { meta_int(&f, "depth"), meta_int(&f, "width"),
                              meta_int(&f, "in_channels"),
                              stem && !strcmp(stem, "small") ? SSL_STEM_SMALL : SSL_STEM_IMAGENET };
    float T = temp ? strtof(temp, NULL) : 0.5f;
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 2);
    ctx.backend = be;
    ssl_resnet m;
    ssl_registry head;
    ssl_mlp mlp;
    ssl_registry_init(&head);
    if (ssl_resnet_init(&m, &cfg, &ctx.rng, err) != SSL_OK) {
        CHECK(0, "%s: %s", what, err);
        ssl_registry_free(&head);
        ssl_ctx_free(&ctx);
        ssl_st_free(&f);
        return;
    }
    CHECK(ssl_mlp_init(&mlp, &head, "projector", m.feat_dim, 32, 16, 1, &ctx.rng) == SSL_OK,
          "%s: mlp init", what);

    /* Names both ways: every registry entry is in the file (copy_state), and
     * every state_dict entry of the file is in a registry. */
    CHECK(copy_state(&m.reg, &f, what) == 0, "%s: encoder state does not match torch's", what);
    CHECK(copy_state(&head, &f, what) == 0, "%s: head state does not match torch's", what);
    int n_state = 0;
    for (int i = 0; i < f.n; i++) {
        const char *name = f.entries[i].name;
        if (is_result(name)) continue;
        n_state++;
        const ssl_registry *r = strncmp(name, "projector.", 10) ? &m.reg : &head;
        CHECK(in_registry(r, name), "%s: torch's '%s' has no counterpart", what, name);
    }
    CHECK(n_state == m.reg.n_params + m.reg.n_buffers + m.reg.n_counters + head.n_params +
                         head.n_buffers + head.n_counters,
          "%s: %d state_dict tensors in torch", what, n_state);

    const ssl_st_entry *xe = ssl_st_find(&f, "input");
    CHECK(xe && xe->dtype == SSL_DT_F32 && xe->ndim == 4, "%s: golden input", what);
    if (!xe || xe->dtype != SSL_DT_F32 || xe->ndim != 4) goto done;
    int xs[4] = { (int)xe->shape[0], (int)xe->shape[1], (int)xe->shape[2], (int)xe->shape[3] };
    ssl_tensor x = ssl_tensor_wrap(xe->data, NULL, 4, xs, SSL_LAYOUT_NCHW);
    int N = xs[0];

    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    g.training = 1;
    g.record = 1;
    ssl_tensor *h = ssl_resnet_forward(&g, &m, &x);
    ssl_tensor *p = ssl_mlp_forward(&g, &mlp, h);
    ssl_tensor *loss = ssl_op_ntxent(&g, ssl_op_l2normalize(&g, p), T);
    CHECK(loss != NULL, "%s: forward failed: %s", what, ctx.err);
    if (loss) {
        char msg[200];
        const float *ref = golden(&f, "features", (long)N * m.feat_dim);
        snprintf(msg, sizeof msg, "%s features", what);
        if (ref) CHECK_CLOSE(h->data, ref, (long)N * m.feat_dim, 1e-4, 1e-3, msg);
        ref = golden(&f, "projection", (long)N * 16);
        snprintf(msg, sizeof msg, "%s projection", what);
        if (ref) CHECK_CLOSE(p->data, ref, (long)N * 16, 1e-4, 1e-3, msg);
        const float *lref = golden(&f, "loss", 1);
        snprintf(msg, sizeof msg, "%s loss", what);
        if (lref) CHECK_CLOSE(loss->data, lref, 1, 0.0, tol->loss_rtol, msg);

        ssl_registry_zero_grad(&m.reg);
        ssl_registry_zero_grad(&head);
        CHECK(ssl_graph_backward(&g, loss) == SSL_OK, "%s: backward: %s", what, ctx.err);
        double worst = 0;
        compare_grads(&m.reg, &f, what, tol, &worst);
        compare_grads(&head, &f, what, tol, &worst);
        compare_after(&m.reg, &f, what);
        compare_after(&head, &f, what);
        printf("%s: loss %.7f vs torch %.7f, gradients use %.3f of their tolerance\n", what,
               loss->data[0], lref ? lref[0] : 0.0f, worst);

        /* Eval mode uses the running stats the training forward just updated. */
        ssl_graph_reset(&g);
        g.training = 0;
        g.record = 0;
        int64_t nbt = m.bn1.num_batches_tracked;
        ssl_tensor *he = ssl_resnet_forward(&g, &m, &x);
        CHECK(he != NULL, "%s: eval forward failed: %s", what, ctx.err);
        ref = golden(&f, "eval_features", (long)N * m.feat_dim);
        snprintf(msg, sizeof msg, "%s eval_features", what);
        if (he && ref) CHECK_CLOSE(he->data, ref, (long)N * m.feat_dim, 1e-4, 1e-3, msg);
        CHECK(m.bn1.num_batches_tracked == nbt, "%s: eval forward counted a batch", what);
        CHECK(g.n_nodes == 0, "%s: eval forward recorded %d nodes", what, g.n_nodes);
    }
    ssl_graph_free(&g);
done:
    ssl_resnet_free(&m);
    ssl_registry_free(&head);
    ssl_ctx_free(&ctx);
    ssl_st_free(&f);
}

/* Our width-64 ImageNet-stem registry against torchvision.models.<arch>()'s
 * state_dict (names, shapes, order), stored by the generator as JSON. */
static void test_torchvision_names(const ssl_st_file *f, const char *arch, int depth)
{
    char key[64], err[SSL_ERR_LEN] = "";
    snprintf(key, sizeof key, "torchvision.%s", arch);
    const char *text = ssl_st_meta(f, key);
    CHECK(text != NULL, "golden metadata '%s' missing", key);
    ssl_json j;
    if (!text || ssl_json_parse(&j, text, strlen(text), err) != SSL_OK) {
        CHECK(0, "%s: %s", key, err);
        return;
    }
    ssl_resnet_config cfg = { depth, 64, 3, SSL_STEM_IMAGENET };
    ssl_rng rng;
    ssl_rng_seed(&rng, 3);
    ssl_resnet m;
    if (ssl_resnet_init(&m, &cfg, &rng, err) != SSL_OK) {
        CHECK(0, "%s: %s", arch, err);
        ssl_json_free(&j);
        return;
    }
    const ssl_registry *r = &m.reg;
    int ip = 0, ib = 0, ic = 0, bad = 0;
    CHECK(j.type == SSL_JSON_ARRAY, "%s: metadata is not a list", key);
    for (int i = 0; j.type == SSL_JSON_ARRAY && i < j.n; i++) {
        const ssl_json *it = &j.items[i];
        if (it->type != SSL_JSON_ARRAY || it->n != 2 || it->items[0].type != SSL_JSON_STRING ||
            it->items[1].type != SSL_JSON_ARRAY || it->items[1].n > 4) {
            bad++;
            continue;
        }
        const char *name = it->items[0].str;
        const ssl_json *sh = &it->items[1];
        /* state_dict order: our params, buffers and counters are each in
         * torch's order, so walking torch's list advances exactly one of them */
        int ndim = -1;
        const int64_t *shape = NULL;
        if (ip < r->n_params && !strcmp(r->params[ip].name, name)) {
            ndim = r->params[ip].ndim;
            shape = r->params[ip++].shape;
        } else if (ib < r->n_buffers && !strcmp(r->buffers[ib].name, name)) {
            ndim = r->buffers[ib].ndim;
            shape = r->buffers[ib++].shape;
        } else if (ic < r->n_counters && !strcmp(r->counters[ic].name, name)) {
            ic++;
            ndim = 0;
        }
        int ok = ndim == sh->n;
        for (int d = 0; ok && d < ndim; d++) ok = (double)shape[d] == sh->items[d].num;
        CHECK(ok, "%s: torchvision's '%s' is not our next entry or differs in shape", arch, name);
        bad += !ok;
    }
    CHECK(!bad && ip == r->n_params && ib == r->n_buffers && ic == r->n_counters,
          "%s: %d of %d params, %d of %d buffers, %d of %d counters matched torchvision", arch,
          ip, r->n_params, ib, r->n_buffers, ic, r->n_counters);
    ssl_resnet_free(&m);
    ssl_json_free(&j);
}

/* The copy check can fail: a model of another width does not load. */
static void test_mismatch_detected(const ssl_st_file *f)
{
    ssl_resnet_config cfg = { 18, 4, 1, SSL_STEM_SMALL };
    ssl_rng rng;
    ssl_rng_seed(&rng, 5);
    ssl_resnet m;
    char err[SSL_ERR_LEN] = "";
    if (ssl_resnet_init(&m, &cfg, &rng, err) != SSL_OK) {
        CHECK(0, "init: %s", err);
        return;
    }
    int bad = copy_state(&m.reg, f, NULL);
    CHECK(bad == m.reg.n_params + m.reg.n_buffers, "a width-4 ResNet loaded %d bad of %d",
          bad, m.reg.n_params + m.reg.n_buffers);
    ssl_resnet_free(&m);

    /* A wrong channel count is an error with a message, not a crash. */
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    cfg.width = 8;
    if (ssl_resnet_init(&m, &cfg, &rng, err) != SSL_OK) {
        CHECK(0, "init: %s", err);
        ssl_ctx_free(&ctx);
        return;
    }
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    float buf[3 * 8 * 8] = { 0 };
    int xs[4] = { 1, 3, 8, 8 };
    ssl_tensor x = ssl_tensor_wrap(buf, NULL, 4, xs, SSL_LAYOUT_NCHW);
    CHECK(ssl_resnet_forward(&g, &m, &x) == NULL && strstr(ctx.err, "input"),
          "3-channel input to a 1-channel ResNet: '%s'", ctx.err);
    ssl_graph_free(&g);
    ssl_resnet_free(&m);
    ssl_ctx_free(&ctx);
}

/* NT-Xent alone: loss and dL/dz vs autograd, on unit rows and through
 * l2normalize on raw rows. */
static void test_ntxent(const ssl_backend *be)
{
    ssl_st_file f;
    if (!golden_load(&f, "ntxent.safetensors", "gen_resnet.py")) return;
    const char *ts = ssl_st_meta(&f, "temperature"), *tx = ssl_st_meta(&f, "temperature_x");
    CHECK(ts && tx, "ntxent: temperatures missing from the metadata");
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    ctx.backend = be;
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    const char *in[2] = { "z", "x" }, *lk[2] = { "loss", "loss_x" }, *gk[2] = { "grad", "grad_x" };
    for (int k = 0; k < 2 && ts && tx; k++) {
        const float *z0 = golden(&f, in[k], 30), *lref = golden(&f, lk[k], 1),
                    *gref = golden(&f, gk[k], 30);
        if (!z0 || !lref || !gref) continue;
        float z[30], dz[30] = { 0 };
        memcpy(z, z0, sizeof z);
        int shape[2] = { 6, 5 };
        ssl_tensor zt = ssl_tensor_wrap(z, dz, 2, shape, SSL_LAYOUT_NCHW);
        ssl_graph_reset(&g);
        ssl_tensor *zz = k ? ssl_op_l2normalize(&g, &zt) : &zt;
        ssl_tensor *loss = ssl_op_ntxent(&g, zz, strtof(k ? tx : ts, NULL));
        CHECK(loss != NULL, "ntxent %s: %s", in[k], ctx.err);
        if (!loss) continue;
        CHECK_CLOSE(loss->data, lref, 1, 0.0, 1e-6, k ? "ntxent(normalize(x)) loss" : "ntxent loss");
        CHECK(ssl_graph_backward(&g, loss) == SSL_OK, "ntxent backward: %s", ctx.err);
        CHECK_CLOSE(dz, gref, 30, 1e-6, 1e-4, k ? "ntxent(normalize(x)) dL/dx" : "ntxent dL/dz");
    }
    ssl_graph_free(&g);
    ssl_ctx_free(&ctx);
    ssl_st_free(&f);
}

int main(void)
{
    const ssl_backend *bes[2] = { ssl_backend_cpu(), ssl_backend_ref() };
    const tolerances r18 = { 1e-4, 1e-3, 1e-5 }, r50 = { 1e-3, 1e-2, 1e-4 };
    for (int b = 0; b < 2; b++) {
        test_ntxent(bes[b]);
        test_model("resnet18s.safetensors", bes[b], &r18);
        test_model("resnet50.safetensors", bes[b], &r50);
    }
    ssl_st_file f;
    if (golden_load(&f, "resnet18s.safetensors", "gen_resnet.py")) {
        test_torchvision_names(&f, "resnet18", 18);
        test_mismatch_detected(&f);
        ssl_st_free(&f);
    }
    return check_report("resnet");
}
