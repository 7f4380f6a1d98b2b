/* The oneDNN backend: convolution forward and backward as oneDNN primitives,
 * every other op from the cpu backend.
 *
 * oneDNN is fastest on its own blocked layouts (nChw16c on AVX-512), so each
 * convolution is planned once per (geometry, direction, threads): the
 * primitive picks its layouts, and reorders to and from the caller's layout
 * are added at the edges only where they differ. Backward results are
 * accumulated (+=) by the final reorder with a sum post-op, as ops.h asks;
 * oneDNN's own backward overwrites. All buffers the plan needs (blocked
 * copies, oneDNN scratchpads) are offsets into ssl_ctx_scratch, so a step
 * after the first allocates nothing. Plans live in ctx->backend_state.
 * 3x3 stride-1 convolutions of 16+ channels go to the Winograd kernels
 * (winograd.c) instead, which beat oneDNN's direct ones on AVX2 by 1.7-2.3x.
 *
 * With ctx->bf16 every convolution goes to oneDNN in bfloat16: the reorders
 * at the edges round x, w and dy to bf16 (round to nearest even), the
 * primitives multiply in bf16 and accumulate in fp32 (AVX512-BF16 or AMX),
 * and y, dx and dw come back in fp32. Such plans are cached apart from the
 * fp32 ones. Checked against ref.c by tests/test_dnnl.c (bf16: against the
 * reference on bf16-rounded inputs). */
#include "selfsup/ops_dnnl.h"

#include "smallconv.h"
#include "winograd.h"

#ifdef SSL_HAVE_DNNL
#include <dnnl.h>
#include <dnnl_debug.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The caller's tensors a plan binds to. */
enum { T_X, T_W, T_Y, T_DX, T_DW, T_DY, T_COUNT };

#define PLAN_MEMS 16
#define PLAN_STEPS 10
#define STEP_ARGS 5

typedef struct plan_mem {
    dnnl_memory_t m;
    int tensor;   /* T_* for the caller's memory, else -1: a buffer in scratch */
    int copy_of;  /* for a buffer: the T_* it holds a reordered copy of, or -1 */
    size_t off;   /* buffer: byte offset in the scratch */
} plan_mem;

typedef struct plan_step {
    dnnl_primitive_t p;
    int needs_dx; /* skipped when the caller passes dx == NULL */
    int nargs;
    dnnl_exec_arg_t args[STEP_ARGS];
} plan_step;

typedef struct conv_plan {
    ssl_conv_desc d;
    int bwd, n_threads;
    int every;    /* planned for the table that sends every conv to oneDNN */
    int bf16;     /* x, w, dy in bfloat16 (ctx->bf16) */
    int use_cpu;  /* the cpu backend runs it (faster, or oneDNN refused) */
    int cpu_weights; /* backward: the cpu backend computes dw, the plan dx */
    int n_full;   /* images the caller's layout strides count (d.N, or more
                     when d is a chunk of a larger batch) */
    int n_mems, n_steps;
    plan_mem mems[PLAN_MEMS];
    plan_step steps[PLAN_STEPS];
    size_t scratch_bytes;
} conv_plan;

typedef struct dnnl_state {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    int n_plans, cap;
    conv_plan **plans;
} dnnl_state;

static void plan_free(conv_plan *p)
{
    for (int i = 0; i < p->n_steps; i++) dnnl_primitive_destroy(p->steps[i].p);
    for (int i = 0; i < p->n_mems; i++) dnnl_memory_destroy(p->mems[i].m);
    ssl_free(p);
}

static void state_free(void *s)
{
    dnnl_state *st = s;
    for (int i = 0; i < st->n_plans; i++) plan_free(st->plans[i]);
    ssl_free(st->plans);
    if (st->stream) dnnl_stream_destroy(st->stream);
    if (st->engine) dnnl_engine_destroy(st->engine);
    ssl_free(st);
}

/* The context's state, created on first use; NULL (ctx->err set) on failure. */
static dnnl_state *get_state(ssl_ctx *ctx)
{
    if (ctx->backend_state) {
        if (ctx->backend_state_free == state_free) return ctx->backend_state;
        ssl_ctx_fail(ctx, SSL_EDEVICE, "dnnl backend: ctx holds another backend's state");
        return NULL;
    }
    dnnl_state *st = ssl_calloc(sizeof *st);
    if (!st) {
        ssl_ctx_fail(ctx, SSL_ENOMEM, "dnnl backend: out of memory");
        return NULL;
    }
    dnnl_status_t s = dnnl_engine_create(&st->engine, dnnl_cpu, 0);
    if (s == dnnl_success) s = dnnl_stream_create(&st->stream, st->engine, dnnl_stream_default_flags);
    if (s != dnnl_success) {
        ssl_ctx_fail(ctx, SSL_EDEVICE, "dnnl backend: cannot create a CPU engine: %s",
                     dnnl_status2str(s));
        state_free(st);
        return NULL;
    }
    ctx->backend_state = st;
    ctx->backend_state_free = state_free;
    return st;
}

/* ------------------------------------------------------------ plan building */

static void dims4(dnnl_dims_t d, int a, int b, int c, int e)
{
    d[0] = a; d[1] = b; d[2] = c; d[3] = e;
}

/* Activation (n, c, h, w) in the caller's layout, N images of a batch of
 * n_full (CNHW strides count the whole batch). */
static void act_md(dnnl_memory_desc_t *md, ssl_layout l, int N, int C, int H, int W, int n_full)
{
    dnnl_dims_t dims, strides;
    long sn, sc;
    ssl_layout_strides(l, n_full, C, H, W, &sn, &sc);
    dims4(dims, N, C, H, W);
    dims4(strides, (int)sn, (int)sc, W, 1);
    dnnl_memory_desc_init_by_strides(md, 4, dims, dnnl_f32, strides);
}

static void tag_md(dnnl_memory_desc_t *md, int a, int b, int c, int e, dnnl_format_tag_t tag,
                   dnnl_data_type_t dt)
{
    dnnl_dims_t dims;
    dims4(dims, a, b, c, e);
    dnnl_memory_desc_init_by_tag(md, 4, dims, dt, tag);
}

static const dnnl_memory_desc_t *mem_md(dnnl_memory_t m)
{
    const dnnl_memory_desc_t *md = NULL;
    dnnl_memory_get_memory_desc(m, &md);
    return md;
}

/* A new memory in the plan: the caller's tensor (tensor >= 0) or a scratch
 * buffer. NULL when the plan is full or oneDNN fails. */
static dnnl_memory_t add_mem(conv_plan *p, dnnl_state *st, const dnnl_memory_desc_t *md,
                             int tensor, int copy_of)
{
    if (p->n_mems == PLAN_MEMS) return NULL;
    plan_mem *pm = &p->mems[p->n_mems];
    if (dnnl_memory_create(&pm->m, md, st->engine, DNNL_MEMORY_NONE) != dnnl_success) return NULL;
    pm->tensor = tensor;
    pm->copy_of = copy_of;
    pm->off = 0;
    if (tensor < 0) {
        pm->off = (p->scratch_bytes + 63) & ~(size_t)63;
        p->scratch_bytes = pm->off + dnnl_memory_desc_get_size(md);
    }
    p->n_mems++;
    return pm->m;
}

/* The memory wrapping caller tensor t in md (one per tensor). */
static dnnl_memory_t user_mem(conv_plan *p, dnnl_state *st, int t, const dnnl_memory_desc_t *md)
{
    for (int i = 0; i < p->n_mems; i++)
        if (p->mems[i].tensor == t) return p->mems[i].m;
    return add_mem(p, st, md, t, -1);
}

static int add_step(conv_plan *p, dnnl_primitive_t prim, int needs_dx, int nargs,
                    const dnnl_exec_arg_t *args)
{
    if (p->n_steps == PLAN_STEPS) {
        dnnl_primitive_destroy(prim);
        return -1;
    }
    plan_step *s = &p->steps[p->n_steps++];
    s->p = prim;
    s->needs_dx = needs_dx;
    s->nargs = nargs;
    memcpy(s->args, args, sizeof(dnnl_exec_arg_t) * (size_t)nargs);
    return 0;
}

/* A reorder step src -> dst; accumulate adds into dst (sum post-op). */
static int add_reorder(conv_plan *p, dnnl_state *st, dnnl_memory_t src, dnnl_memory_t dst,
                       int accumulate, int needs_dx)
{
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t scr = NULL;
    int ok = dnnl_primitive_attr_create(&attr) == dnnl_success &&
             dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success;
    if (ok && accumulate)
        ok = dnnl_post_ops_create(&po) == dnnl_success &&
             dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    ok = ok && dnnl_reorder_primitive_desc_create(&pd, mem_md(src), st->engine, mem_md(dst),
                                                  st->engine, attr) == dnnl_success;
    if (ok) {
        const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        if (smd && dnnl_memory_desc_get_size(smd) > 0) ok = (scr = add_mem(p, st, smd, -1, -1)) != NULL;
    }
    ok = ok && dnnl_primitive_create(&prim, pd) == dnnl_success;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) return -1;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}, {DNNL_ARG_SCRATCHPAD, scr}};
    return add_step(p, prim, needs_dx, scr ? 3 : 2, args);
}

/* What a primitive reads for caller tensor t: the caller's memory when the
 * layouts agree, else a scratch copy filled by a reorder step (shared by
 * later primitives wanting the same layout). */
static dnnl_memory_t bind_input(conv_plan *p, dnnl_state *st, int t,
                                const dnnl_memory_desc_t *user_md,
                                const dnnl_memory_desc_t *want, int needs_dx)
{
    dnnl_memory_t u = user_mem(p, st, t, user_md);
    if (!u) return NULL;
    if (dnnl_memory_desc_equal(mem_md(u), want)) return u;
    for (int i = 0; i < p->n_mems; i++)
        if (p->mems[i].copy_of == t && dnnl_memory_desc_equal(mem_md(p->mems[i].m), want))
            return p->mems[i].m;
    dnnl_memory_t b = add_mem(p, st, want, -1, t);
    if (!b || add_reorder(p, st, u, b, 0, needs_dx)) return NULL;
    return b;
}

/* Memory for a primitive's output `have` headed for caller tensor t. With
 * accumulate or a layout mismatch it is a scratch buffer and *tail gets the
 * buffer; the caller adds the copy-back with finish_output after the
 * primitive's own step. */
static dnnl_memory_t bind_output(conv_plan *p, dnnl_state *st, int t,
                                 const dnnl_memory_desc_t *user_md,
                                 const dnnl_memory_desc_t *have, int accumulate,
                                 dnnl_memory_t *tail)
{
    dnnl_memory_t u = user_mem(p, st, t, user_md);
    *tail = NULL;
    if (!u) return NULL;
    if (!accumulate && dnnl_memory_desc_equal(mem_md(u), have)) return u;
    *tail = add_mem(p, st, have, -1, -1);
    return *tail;
}

static int finish_output(conv_plan *p, dnnl_state *st, int t, dnnl_memory_t tail,
                         int accumulate, int needs_dx)
{
    if (!tail) return 0;
    return add_reorder(p, st, tail, user_mem(p, st, t, NULL), accumulate, needs_dx);
}

/* The primitive for pd with its scratchpad as a plan buffer; the step args
 * get DNNL_ARG_SCRATCHPAD appended. */
static int add_conv_step(conv_plan *p, dnnl_state *st, const_dnnl_primitive_desc_t pd,
                         int needs_dx, int nargs, dnnl_exec_arg_t *args)
{
    dnnl_primitive_t prim;
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (smd && dnnl_memory_desc_get_size(smd) > 0) {
        dnnl_memory_t scr = add_mem(p, st, smd, -1, -1);
        if (!scr) return -1;
        args[nargs].arg = DNNL_ARG_SCRATCHPAD;
        args[nargs++].memory = scr;
    }
    if (dnnl_primitive_create(&prim, pd) != dnnl_success) return -1;
    return add_step(p, prim, needs_dx, nargs, args);
}

typedef struct conv_mds {
    dnnl_memory_desc_t x, w, y;        /* the caller's layouts (fp32) */
    /* "any": oneDNN chooses; the inputs x, w, dy in the plan's type, the
     * outputs y, dx, dw in fp32 */
    dnnl_memory_desc_t ax, aw, ay, adx, ady, adw;
    dnnl_dims_t strides, pad_l, pad_r;
} conv_mds;

static void conv_mds_init(conv_mds *m, const ssl_conv_desc *d, int bf16, int n_full)
{
    dnnl_data_type_t in = bf16 ? dnnl_bf16 : dnnl_f32;
    act_md(&m->x, d->layout, d->N, d->C, d->H, d->W, n_full);
    act_md(&m->y, d->layout, d->N, d->K, d->OH, d->OW, n_full);
    tag_md(&m->w, d->K, d->C, d->R, d->S, dnnl_oihw, dnnl_f32);
    tag_md(&m->ax, d->N, d->C, d->H, d->W, dnnl_format_tag_any, in);
    tag_md(&m->aw, d->K, d->C, d->R, d->S, dnnl_format_tag_any, in);
    tag_md(&m->ady, d->N, d->K, d->OH, d->OW, dnnl_format_tag_any, in);
    tag_md(&m->ay, d->N, d->K, d->OH, d->OW, dnnl_format_tag_any, dnnl_f32);
    tag_md(&m->adx, d->N, d->C, d->H, d->W, dnnl_format_tag_any, dnnl_f32);
    tag_md(&m->adw, d->K, d->C, d->R, d->S, dnnl_format_tag_any, dnnl_f32);
    m->strides[0] = m->strides[1] = d->stride;
    m->pad_l[0] = m->pad_l[1] = d->pad;
    /* right padding that makes floor((H + 2p - R) / s) + 1 outputs exactly */
    m->pad_r[0] = (dnnl_dim_t)(d->OH - 1) * d->stride + d->R - d->H - d->pad;
    m->pad_r[1] = (dnnl_dim_t)(d->OW - 1) * d->stride + d->S - d->W - d->pad;
}

static const dnnl_memory_desc_t *pd_md(const_dnnl_primitive_desc_t pd, dnnl_query_t q)
{
    return dnnl_primitive_desc_query_md(pd, q, 0);
}

static int plan_fwd(conv_plan *p, dnnl_state *st, const conv_mds *m,
                    const_dnnl_primitive_desc_t fpd)
{
    dnnl_memory_t tail;
    dnnl_memory_t x = bind_input(p, st, T_X, &m->x, pd_md(fpd, dnnl_query_src_md), 0);
    dnnl_memory_t w = bind_input(p, st, T_W, &m->w, pd_md(fpd, dnnl_query_weights_md), 0);
    dnnl_memory_t y = bind_output(p, st, T_Y, &m->y, pd_md(fpd, dnnl_query_dst_md), 0, &tail);
    if (!x || !w || !y) return -1;
    dnnl_exec_arg_t a[STEP_ARGS] = {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, y}};
    if (add_conv_step(p, st, fpd, 0, 3, a)) return -1;
    return finish_output(p, st, T_Y, tail, 0, 0);
}

/* dw += ... : steps that always run. Planned before the data gradient, so
 * a dy copy made here is shared by the data gradient's steps, which are
 * skipped when dx is NULL. */
static int plan_bwd_weights(conv_plan *p, dnnl_state *st, const conv_mds *m,
                            const_dnnl_primitive_desc_t wpd)
{
    dnnl_memory_t tail;
    dnnl_memory_t x = bind_input(p, st, T_X, &m->x, pd_md(wpd, dnnl_query_src_md), 0);
    dnnl_memory_t dy = bind_input(p, st, T_DY, &m->y, pd_md(wpd, dnnl_query_diff_dst_md), 0);
    dnnl_memory_t dw = bind_output(p, st, T_DW, &m->w, pd_md(wpd, dnnl_query_diff_weights_md), 1,
                                   &tail);
    if (!x || !dy || !dw) return -1;
    dnnl_exec_arg_t a[STEP_ARGS] = {{DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_DST, dy},
                                    {DNNL_ARG_DIFF_WEIGHTS, dw}};
    if (add_conv_step(p, st, wpd, 0, 3, a)) return -1;
    return finish_output(p, st, T_DW, tail, 1, 0);
}

/* dx += ... : steps skipped when dx is NULL. */
static int plan_bwd_data(conv_plan *p, dnnl_state *st, const conv_mds *m,
                         const_dnnl_primitive_desc_t dpd)
{
    dnnl_memory_t tail;
    dnnl_memory_t w = bind_input(p, st, T_W, &m->w, pd_md(dpd, dnnl_query_weights_md), 1);
    dnnl_memory_t dy = bind_input(p, st, T_DY, &m->y, pd_md(dpd, dnnl_query_diff_dst_md), 1);
    dnnl_memory_t dx = bind_output(p, st, T_DX, &m->x, pd_md(dpd, dnnl_query_diff_src_md), 1,
                                   &tail);
    if (!w || !dy || !dx) return -1;
    dnnl_exec_arg_t a[STEP_ARGS] = {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, w},
                                    {DNNL_ARG_DIFF_SRC, dx}};
    if (add_conv_step(p, st, dpd, 1, 3, a)) return -1;
    return finish_output(p, st, T_DX, tail, 1, 1);
}

/* Fills plan p for p->d and p->bwd; -1 when oneDNN cannot do it. */
static int plan_build(conv_plan *p, dnnl_state *st)
{
    conv_mds m;
    dnnl_convolution_desc_t fd, dd, wd;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t fpd = NULL, dpd = NULL, wpd = NULL;
    conv_mds_init(&m, &p->d, p->bf16, p->n_full);
    int ok = dnnl_primitive_attr_create(&attr) == dnnl_success &&
             dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success;
    ok = ok && dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct,
                                                  &m.ax, &m.aw, NULL, &m.ay, m.strides, m.pad_l,
                                                  m.pad_r) == dnnl_success;
    ok = ok && dnnl_primitive_desc_create(&fpd, &fd, attr, st->engine, NULL) == dnnl_success;
    if (ok && !p->bwd) {
        ok = plan_fwd(p, st, &m, fpd) == 0;
    } else if (ok) {
        ok = p->cpu_weights ||
             (dnnl_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, &m.ax,
                                                          &m.adw, NULL, &m.ady, m.strides, m.pad_l,
                                                          m.pad_r) == dnnl_success &&
              dnnl_primitive_desc_create(&wpd, &wd, attr, st->engine, fpd) == dnnl_success);
        ok = ok &&
             dnnl_convolution_backward_data_desc_init(&dd, dnnl_convolution_direct, &m.adx, &m.aw,
                                                      &m.ady, m.strides, m.pad_l,
                                                      m.pad_r) == dnnl_success &&
             dnnl_primitive_desc_create(&dpd, &dd, attr, st->engine, fpd) == dnnl_success &&
             (p->cpu_weights || plan_bwd_weights(p, st, &m, wpd) == 0) &&
             plan_bwd_data(p, st, &m, dpd) == 0;
    }
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (dpd) dnnl_primitive_desc_destroy(dpd);
    if (wpd) dnnl_primitive_desc_destroy(wpd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return ok ? 0 : -1;
}

static int same_desc(const ssl_conv_desc *a, const ssl_conv_desc *b)
{
    return a->N == b->N && a->C == b->C && a->H == b->H && a->W == b->W && a->K == b->K &&
           a->R == b->R && a->S == b->S && a->stride == b->stride && a->pad == b->pad &&
           a->OH == b->OH && a->OW == b->OW && a->layout == b->layout;
}

/* Where oneDNN beats im2col + BLAS (measured on AVX2, N=512, ResNet-18
 * small-stem layers, widths 16 and 64): spatial kernels over at least 8
 * input channels, 1.1-2x forward and backward-data. 1x1 convolutions are
 * plain matrix products already and the reorders around oneDNN cost more
 * than they save; with fewer than 8 channels (image stems) oneDNN's backward
 * is 3x slower. */
static int dnnl_suits(const ssl_conv_desc *d)
{
    return d->R * d->S > 1 && d->C >= 8;
}

/* The weight gradient: oneDNN wins (1.2-1.5x) while the work per image is
 * small, C*K*OH*OW up to 2^20 (every 3x3 layer of width 16); above that
 * im2col feeds BLAS matrices big enough to beat it (oneDNN 0.75-0.95x on the
 * width-64 layers). Measured N=512, 2 threads. */
static int dnnl_suits_weights(const ssl_conv_desc *d)
{
    return (long)d->C * d->K * d->OH * d->OW <= 1L << 20;
}

/* The cached plan for (d, bwd, threads, every, ctx->bf16), built on first
 * use. A geometry where the cpu backend is faster (unless `every` or bf16),
 * or that oneDNN refuses, gets a plan with use_cpu set (the cpu backend runs
 * it in fp32), so it is decided only once.
 * NULL (ctx->err set) only when out of memory or without an engine. */
static conv_plan *get_plan(ssl_ctx *ctx, const ssl_conv_desc *d, int bwd, int every, int n_full)
{
    int bf16 = ctx->bf16 != 0;
    every |= bf16;
    dnnl_state *st = get_state(ctx);
    if (!st) return NULL;
    for (int i = 0; i < st->n_plans; i++) {
        conv_plan *p = st->plans[i];
        if (p->bwd == bwd && p->every == every && p->bf16 == bf16 &&
            p->n_threads == ctx->n_threads && p->n_full == n_full && same_desc(&p->d, d))
            return p;
    }
    if (st->n_plans == st->cap) {
        int cap = st->cap ? 2 * st->cap : 32;
        conv_plan **np = ssl_malloc(sizeof *np * (size_t)cap);
        if (!np) {
            ssl_ctx_fail(ctx, SSL_ENOMEM, "dnnl backend: out of memory");
            return NULL;
        }
        if (st->n_plans) memcpy(np, st->plans, sizeof *np * (size_t)st->n_plans);
        ssl_free(st->plans);
        st->plans = np;
        st->cap = cap;
    }
    conv_plan *p = ssl_calloc(sizeof *p);
    if (!p) {
        ssl_ctx_fail(ctx, SSL_ENOMEM, "dnnl backend: out of memory");
        return NULL;
    }
    p->d = *d;
    p->bwd = bwd;
    p->every = every;
    p->bf16 = bf16;
    p->n_threads = ctx->n_threads;
    p->n_full = n_full;
    p->cpu_weights = bwd && !every && !dnnl_suits_weights(d);
    if ((!every && !dnnl_suits(d)) || plan_build(p, st)) { /* keep only the key: cpu runs it */
        for (int i = 0; i < p->n_steps; i++) dnnl_primitive_destroy(p->steps[i].p);
        for (int i = 0; i < p->n_mems; i++) dnnl_memory_destroy(p->mems[i].m);
        p->n_steps = p->n_mems = 0;
        p->scratch_bytes = 0;
        p->use_cpu = 1;
    }
    st->plans[st->n_plans++] = p;
    return p;
}

/* Binds the caller's pointers (tensors[T_*]) and the scratch, then runs the
 * steps in order. */
static void plan_run(ssl_ctx *ctx, conv_plan *p, void *const *tensors, int have_dx)
{
    dnnl_state *st = ctx->backend_state;
    char *scratch = p->scratch_bytes ? ssl_ctx_scratch(ctx, p->scratch_bytes) : NULL;
    if (p->scratch_bytes && !scratch) return;
#ifdef _OPENMP
    /* oneDNN's OpenMP runtime uses the calling thread's team size; the plan
     * was built for ctx->n_threads */
    if (omp_get_max_threads() != ctx->n_threads) omp_set_num_threads(ctx->n_threads);
#endif
    for (int i = 0; i < p->n_mems; i++) {
        plan_mem *pm = &p->mems[i];
        void *h = pm->tensor >= 0 ? tensors[pm->tensor] : scratch + pm->off;
        if (pm->tensor == T_DX && !have_dx) continue;
        dnnl_memory_set_data_handle(pm->m, h);
    }
    for (int i = 0; i < p->n_steps; i++) {
        plan_step *s = &p->steps[i];
        if (s->needs_dx && !have_dx) continue;
        dnnl_status_t e = dnnl_primitive_execute(s->p, st->stream, s->nargs, s->args);
        if (e != dnnl_success) {
            ssl_ctx_fail(ctx, SSL_EDEVICE, "dnnl conv %s step %d failed: %s",
                         p->bwd ? "backward" : "forward", i, dnnl_status2str(e));
            return;
        }
    }
    dnnl_stream_wait(st->stream);
}

/* ------------------------------------------------------------ the backend */

/* Winograd for d: 3x3/1 layers, but not planes of 6x6 and smaller with at
 * most 64 channels, where oneDNN's direct kernels win (bench/winograd_layers,
 * w16, 12-pixel crops, N 2048: 6x6 32->32 4.7 / 9.2 ms forward / backward
 * against 5.1 / 12.7 for Winograd, 3x3 64->64 4.3 / 8.3 against 4.3 / 9.3;
 * at 128+ channels Winograd wins again: 6x6 128->128 23.5 / 54.5 against
 * 31.3 / 67.3). */
static int use_winograd(const ssl_ctx *ctx, const ssl_conv_desc *d)
{
    if (ctx->bf16 || ctx->direct_conv || !ssl_winograd_fast() || !ssl_winograd_suits(d)) return 0;
    return !(d->H * d->W <= 36 && d->C <= 64 && d->K <= 64);
}

/* Chunks of images a call of plan p runs in so that its reordered copies
 * stay within ctx->conv_buffer_cap (64 MB by default): the first strided
 * layer of ResNet-18 w64 on 2 x 256 32x32 images wanted 192 MB at once,
 * which stayed in the process as scratch. */
static int plan_chunks(const ssl_ctx *ctx, const conv_plan *p)
{
    const size_t cap = ctx->conv_buffer_cap ? ctx->conv_buffer_cap : (size_t)64 << 20;
    size_t n = (p->scratch_bytes + cap - 1) / cap;
    return n < 1 ? 1 : n > (size_t)p->d.N ? p->d.N : (int)n;
}

/* Image n0 of activation a (N images, ch channels, hw pixels) in layout l. */
static float *image_at(const float *a, ssl_layout l, int N, int ch, long hw, int n0)
{
    long sn, sc;
    ssl_layout_strides(l, N, ch, 1, (int)hw, &sn, &sc);
    return a ? (float *)a + n0 * sn : NULL;
}

/* Runs plan p (for all d->N images) or, when its copies would exceed the
 * cap, the plans of chunks of images whose results are the same: forward
 * and dx are per image, dw is accumulated chunk after chunk. */
static void run_chunked(ssl_ctx *ctx, conv_plan *p, const ssl_conv_desc *d, int every,
                        void *const *t, int have_dx)
{
    const int chunks = plan_chunks(ctx, p);
    if (chunks == 1) {
        plan_run(ctx, p, t, have_dx);
        return;
    }
    const int per = (d->N + chunks - 1) / chunks;
    const long xhw = (long)d->H * d->W, yhw = (long)d->OH * d->OW;
    /* the chunks' plans (two sizes at most) first: should oneDNN refuse one,
     * the whole batch runs in p, before any chunk has added to dw */
    for (int k = 0; k < 2; k++) {
        ssl_conv_desc c = *d;
        c.N = k == 0 ? per : d->N - (d->N - 1) / per * per; /* the last chunk */
        conv_plan *q = get_plan(ctx, &c, p->bwd, every, d->N);
        if (!q) return;
        if (q->use_cpu) {
            plan_run(ctx, p, t, have_dx);
            return;
        }
    }
    for (int n0 = 0; n0 < d->N && !ctx->failed; n0 += per) {
        ssl_conv_desc c = *d;
        c.N = d->N - n0 < per ? d->N - n0 : per;
        conv_plan *q = get_plan(ctx, &c, p->bwd, every, d->N);
        if (!q) return;
        void *u[T_COUNT] = {image_at(t[T_X], d->layout, d->N, d->C, xhw, n0), t[T_W],
                            image_at(t[T_Y], d->layout, d->N, d->K, yhw, n0),
                            image_at(t[T_DX], d->layout, d->N, d->C, xhw, n0), t[T_DW],
                            image_at(t[T_DY], d->layout, d->N, d->K, yhw, n0)};
        plan_run(ctx, q, u, have_dx);
    }
}

static void conv_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                     const ssl_conv_desc *d, int every)
{
    if (!every && !ctx->bf16 && !ctx->direct_conv && ssl_smallconv_suits(d)) {
        ssl_smallconv_fwd(ctx, y, x, w, d); /* planes of 2x2 and smaller: one GEMM */
        return;
    }
    if (!every && use_winograd(ctx, d)) { /* 3x3/1: 1.7-2.3x oneDNN's direct kernels */
        ssl_winograd_conv_fwd(ctx, y, x, w, d);
        return;
    }
    conv_plan *p = get_plan(ctx, d, 0, every, d->N);
    if (!p) return;
    if (p->use_cpu) {
        ssl_backend_cpu()->conv2d_fwd(ctx, y, x, w, d);
        return;
    }
    void *t[T_COUNT] = {(void *)x, (void *)w, y, NULL, NULL, NULL};
    run_chunked(ctx, p, d, every, t, 0);
}

static void conv_bwd(ssl_ctx *ctx, float *dx, float *dw, const float *dy, const float *x,
                     const float *w, const ssl_conv_desc *d, int every)
{
    if (!every && !ctx->bf16 && !ctx->direct_conv && ssl_smallconv_suits(d)) {
        ssl_smallconv_bwd(ctx, dx, dw, dy, x, w, d);
        return;
    }
    if (!every && use_winograd(ctx, d)) {
        ssl_winograd_conv_bwd(ctx, dx, dw, dy, x, w, d);
        return;
    }
    conv_plan *p = get_plan(ctx, d, 1, every, d->N);
    if (!p) return;
    if (p->use_cpu) {
        ssl_backend_cpu()->conv2d_bwd(ctx, dx, dw, dy, x, w, d);
        return;
    }
    if (p->cpu_weights) {
        ssl_backend_cpu()->conv2d_bwd(ctx, NULL, dw, dy, x, w, d);
        if (!dx) return;
    }
    void *t[T_COUNT] = {(void *)x, (void *)w, NULL, dx, dw, (void *)dy};
    run_chunked(ctx, p, d, every, t, dx != NULL);
}

static void dnnl_conv2d_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                            const ssl_conv_desc *d)
{
    conv_fwd(ctx, y, x, w, d, 0);
}

static void dnnl_conv2d_bwd(ssl_ctx *ctx, float *dx, float *dw, const float *dy,
                            const float *x, const float *w, const ssl_conv_desc *d)
{
    conv_bwd(ctx, dx, dw, dy, x, w, d, 0);
}

static void every_conv2d_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                             const ssl_conv_desc *d)
{
    conv_fwd(ctx, y, x, w, d, 1);
}

static void every_conv2d_bwd(ssl_ctx *ctx, float *dx, float *dw, const float *dy,
                             const float *x, const float *w, const ssl_conv_desc *d)
{
    conv_bwd(ctx, dx, dw, dy, x, w, d, 1);
}

/* Everything but convolution is the cpu backend's. */
static void dnnl_bn_fwd(ssl_ctx *ctx, float *y, float *mean, float *invstd, const float *x,
                        const float *skip, const float *gamma, const float *beta,
                        float *running_mean, float *running_var, int training, float momentum,
                        float eps, int relu, int N, int C, int HW, ssl_layout l)
{
    ssl_backend_cpu()->bn_fwd(ctx, y, mean, invstd, x, skip, gamma, beta, running_mean,
                              running_var, training, momentum, eps, relu, N, C, HW, l);
}

static void dnnl_bn_bwd(ssl_ctx *ctx, float *dx, float *dskip, float *dgamma, float *dbeta,
                        const float *dy, const float *y, const float *x, const float *mean,
                        const float *invstd, const float *gamma, int training, int relu, int N,
                        int C, int HW, ssl_layout l)
{
    ssl_backend_cpu()->bn_bwd(ctx, dx, dskip, dgamma, dbeta, dy, y, x, mean, invstd, gamma,
                              training, relu, N, C, HW, l);
}

static void dnnl_relu_fwd(ssl_ctx *ctx, float *y, const float *x, long n)
{
    ssl_backend_cpu()->relu_fwd(ctx, y, x, n);
}

static void dnnl_relu_bwd(ssl_ctx *ctx, float *dx, const float *dy, const float *y, long n)
{
    ssl_backend_cpu()->relu_bwd(ctx, dx, dy, y, n);
}

static void dnnl_maxpool_fwd(ssl_ctx *ctx, float *y, int32_t *argmax, const float *x,
                             const ssl_pool_desc *d)
{
    ssl_backend_cpu()->maxpool_fwd(ctx, y, argmax, x, d);
}

static void dnnl_maxpool_bwd(ssl_ctx *ctx, float *dx, const float *dy, const int32_t *argmax,
                             const ssl_pool_desc *d)
{
    ssl_backend_cpu()->maxpool_bwd(ctx, dx, dy, argmax, d);
}

static void dnnl_avgpool_fwd(ssl_ctx *ctx, float *y, const float *x, const ssl_pool_desc *d)
{
    ssl_backend_cpu()->avgpool_fwd(ctx, y, x, d);
}

static void dnnl_avgpool_bwd(ssl_ctx *ctx, float *dx, const float *dy, const ssl_pool_desc *d)
{
    ssl_backend_cpu()->avgpool_bwd(ctx, dx, dy, d);
}

static void dnnl_gap_fwd(ssl_ctx *ctx, float *y, const float *x, int N, int C, int HW,
                         ssl_layout l)
{
    ssl_backend_cpu()->gap_fwd(ctx, y, x, N, C, HW, l);
}

static void dnnl_gap_bwd(ssl_ctx *ctx, float *dx, const float *dy, int N, int C, int HW,
                         ssl_layout l)
{
    ssl_backend_cpu()->gap_bwd(ctx, dx, dy, N, C, HW, l);
}

static void dnnl_linear_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                            const float *b, int N, int I, int O)
{
    ssl_backend_cpu()->linear_fwd(ctx, y, x, w, b, N, I, O);
}

static void dnnl_linear_bwd(ssl_ctx *ctx, float *dx, float *dw, float *db, const float *dy,
                            const float *x, const float *w, int N, int I, int O)
{
    ssl_backend_cpu()->linear_bwd(ctx, dx, dw, db, dy, x, w, N, I, O);
}

static const ssl_backend dnnl_backend = {
    .name = "dnnl",
    .device = SSL_DEVICE_CPU,
    .act_layout = SSL_LAYOUT_CNHW,
    .conv2d_fwd = dnnl_conv2d_fwd,
    .conv2d_bwd = dnnl_conv2d_bwd,
    .bn_fwd = dnnl_bn_fwd,
    .bn_bwd = dnnl_bn_bwd,
    .relu_fwd = dnnl_relu_fwd,
    .relu_bwd = dnnl_relu_bwd,
    .maxpool_fwd = dnnl_maxpool_fwd,
    .maxpool_bwd = dnnl_maxpool_bwd,
    .avgpool_fwd = dnnl_avgpool_fwd,
    .avgpool_bwd = dnnl_avgpool_bwd,
    .gap_fwd = dnnl_gap_fwd,
    .gap_bwd = dnnl_gap_bwd,
    .linear_fwd = dnnl_linear_fwd,
    .linear_bwd = dnnl_linear_bwd,
};

static const ssl_backend dnnl_every_backend = {
    .name = "dnnl-every",
    .device = SSL_DEVICE_CPU,
    .act_layout = SSL_LAYOUT_CNHW,
    .conv2d_fwd = every_conv2d_fwd,
    .conv2d_bwd = every_conv2d_bwd,
    .bn_fwd = dnnl_bn_fwd,
    .bn_bwd = dnnl_bn_bwd,
    .relu_fwd = dnnl_relu_fwd,
    .relu_bwd = dnnl_relu_bwd,
    .maxpool_fwd = dnnl_maxpool_fwd,
    .maxpool_bwd = dnnl_maxpool_bwd,
    .avgpool_fwd = dnnl_avgpool_fwd,
    .avgpool_bwd = dnnl_avgpool_bwd,
    .gap_fwd = dnnl_gap_fwd,
    .gap_bwd = dnnl_gap_bwd,
    .linear_fwd = dnnl_linear_fwd,
    .linear_bwd = dnnl_linear_bwd,
};

int ssl_dnnl_available(void)
{
    dnnl_engine_t e;
    if (dnnl_engine_create(&e, dnnl_cpu, 0) != dnnl_success) return 0;
    dnnl_engine_destroy(e);
    return 1;
}

int ssl_dnnl_bf16_available(void)
{
    const unsigned bf16 = dnnl_cpu_isa_avx512_core_bf16; /* a set of ISA bits */
    return ssl_dnnl_available() && ((unsigned)dnnl_get_effective_cpu_isa() & bf16) == bf16;
}

const char *ssl_dnnl_isa(void)
{
    return dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa());
}

int ssl_dnnl_bf16_check(const ssl_backend *be, char *err)
{
    if (be != ssl_backend_dnnl())
        return ssl_fail(err, SSL_EDEVICE, "--precision bf16 runs on the dnnl backend only, not '%s'",
                        be ? be->name : "none");
    if (!ssl_dnnl_bf16_available())
        return ssl_fail(err, SSL_EDEVICE, "--precision bf16 needs a CPU with AVX512-BF16 or AMX "
                        "(oneDNN's ISA here: %s); use fp32", ssl_dnnl_isa());
    return SSL_OK;
}

const ssl_backend *ssl_backend_dnnl(void) { return &dnnl_backend; }
const ssl_backend *ssl_backend_dnnl_every(void) { return &dnnl_every_backend; }

#else /* built without oneDNN */

int ssl_dnnl_available(void) { return 0; }
int ssl_dnnl_bf16_available(void) { return 0; }
const char *ssl_dnnl_isa(void) { return "none (built without oneDNN)"; }
int ssl_dnnl_bf16_check(const ssl_backend *be, char *err)
{
    return ssl_fail(err, SSL_EDEVICE, "--precision bf16 runs on the dnnl backend only, not '%s'",
                    be ? be->name : "none");
}
const ssl_backend *ssl_backend_dnnl(void) { return NULL; }
const ssl_backend *ssl_backend_dnnl_every(void) { return NULL; }

#endif
