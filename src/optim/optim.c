/* SGD, LARS and AdamW over ssl_param arrays. Scalars that PyTorch computes in
 * Python (double) are computed in double here and rounded to float where
 * PyTorch rounds them, so a step matches torch.optim to float rounding. */
#include "selfsup/optim.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Below this many elements a parallel region costs more than it saves. */
#define OMP_MIN 32768
/* Each state slice starts on a 64-byte boundary. */
#define ALIGN_FLOATS 16

struct ssl_optim {
    ssl_optim_config cfg;
    ssl_param *params;     /* (n_params), borrowed */
    int n_params;
    int n_slots;           /* state buffers per param: 1 (SGD, LARS) or 2 (AdamW) */
    float *state;          /* one allocation for every state buffer */
    ssl_buffer *buffers;   /* (n_params * n_slots), param-major within a slot */
    char *names;           /* backing store of the buffers' names */
    double *lr_scales;     /* (n_params) lr multipliers, 1 unless set */
    int64_t steps;         /* calls of ssl_optim_step */
    int64_t *param_steps;  /* (n_params) steps that updated each param (torch's state['step']) */
};

static int64_t round_up(int64_t n) { return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

static int check_config(const ssl_optim_config *c, char *err)
{
    if (c->kind != SSL_OPTIM_SGD && c->kind != SSL_OPTIM_LARS && c->kind != SSL_OPTIM_ADAMW &&
        c->kind != SSL_OPTIM_LARC)
        return ssl_fail(err, SSL_EINVAL, "optimizer: unknown kind %d", (int)c->kind);
    if (!(c->lr >= 0 && isfinite(c->lr)))
        return ssl_fail(err, SSL_EINVAL, "optimizer: lr %g must be finite and >= 0", (double)c->lr);
    if (!(c->weight_decay >= 0 && isfinite(c->weight_decay)))
        return ssl_fail(err, SSL_EINVAL, "optimizer: weight_decay %g must be finite and >= 0",
                        (double)c->weight_decay);
    if (c->kind == SSL_OPTIM_ADAMW) {
        if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
            return ssl_fail(err, SSL_EINVAL, "optimizer: AdamW betas (%g, %g) must be in [0, 1)",
                            (double)c->beta1, (double)c->beta2);
        if (!(c->eps > 0 && isfinite(c->eps)))
            return ssl_fail(err, SSL_EINVAL, "optimizer: AdamW eps %g must be > 0", (double)c->eps);
        return SSL_OK;
    }
    if (!(c->momentum >= 0 && c->momentum < 1))
        return ssl_fail(err, SSL_EINVAL, "optimizer: momentum %g must be in [0, 1)",
                        (double)c->momentum);
    if (c->nesterov && c->momentum == 0)
        return ssl_fail(err, SSL_EINVAL, "optimizer: nesterov needs momentum > 0");
    if ((c->kind == SSL_OPTIM_LARS || c->kind == SSL_OPTIM_LARC) && !(c->eta > 0 && isfinite(c->eta)))
        return ssl_fail(err, SSL_EINVAL, "optimizer: LARS eta %g must be > 0", (double)c->eta);
    return SSL_OK;
}

static int check_param(const ssl_param *p, int i, char *err)
{
    if (!p->name || !p->name[0])
        return ssl_fail(err, SSL_EINVAL, "optimizer: param %d has no name", i);
    if (!p->data || !p->grad)
        return ssl_fail(err, SSL_EINVAL, "optimizer: param '%s' has no data or grad", p->name);
    if (p->numel <= 0 || p->ndim < 0 || p->ndim > 4)
        return ssl_fail(err, SSL_EINVAL, "optimizer: param '%s' has numel %lld, ndim %d",
                        p->name, (long long)p->numel, p->ndim);
    int64_t prod = 1;
    for (int d = 0; d < p->ndim; d++) {
        /* the division keeps a lying shape from overflowing the product */
        if (p->shape[d] <= 0 || prod > p->numel / p->shape[d])
            return ssl_fail(err, SSL_ESHAPE, "optimizer: param '%s' dim %d is %lld (numel %lld)",
                            p->name, d, (long long)p->shape[d], (long long)p->numel);
        prod *= p->shape[d];
    }
    if (prod != p->numel)
        return ssl_fail(err, SSL_ESHAPE, "optimizer: param '%s' shape product %lld != numel %lld",
                        p->name, (long long)prod, (long long)p->numel);
    return SSL_OK;
}

int ssl_optim_create(ssl_optim **out, const ssl_optim_config *cfg, ssl_param *params,
                     int n_params, char *err)
{
    *out = NULL;
    if (!cfg || !params || n_params <= 0)
        return ssl_fail(err, SSL_EINVAL, "optimizer: no params (n_params %d)", n_params);
    int rc = check_config(cfg, err);
    if (rc) return rc;
    int n_slots = cfg->kind == SSL_OPTIM_ADAMW ? 2 : 1;
    const char *slot_names[2];
    if (cfg->kind == SSL_OPTIM_ADAMW) {
        slot_names[0] = "optim.exp_avg.";
        slot_names[1] = "optim.exp_avg_sq.";
    } else {
        slot_names[0] = "optim.momentum.";
        slot_names[1] = NULL;
    }
    int64_t floats = 0;
    size_t name_bytes = 0;
    for (int i = 0; i < n_params; i++) {
        if ((rc = check_param(&params[i], i, err))) return rc;
        floats += n_slots * round_up(params[i].numel);
        for (int s = 0; s < n_slots; s++)
            name_bytes += strlen(slot_names[s]) + strlen(params[i].name) + 1;
    }

    ssl_optim *o = ssl_calloc(sizeof *o);
    if (!o) return ssl_fail(err, SSL_ENOMEM, "optimizer: out of memory");
    o->cfg = *cfg;
    o->params = params;
    o->n_params = n_params;
    o->n_slots = n_slots;
    o->state = ssl_calloc((size_t)floats * sizeof(float));
    o->buffers = ssl_calloc((size_t)n_params * n_slots * sizeof(ssl_buffer));
    o->names = ssl_malloc(name_bytes);
    o->lr_scales = ssl_malloc((size_t)n_params * sizeof(double));
    o->param_steps = ssl_calloc((size_t)n_params * sizeof(int64_t));
    if (!o->state || !o->buffers || !o->names || !o->lr_scales || !o->param_steps) {
        ssl_optim_free(o);
        return ssl_fail(err, SSL_ENOMEM, "optimizer: out of memory for %lld state floats",
                        (long long)floats);
    }
    for (int i = 0; i < n_params; i++) o->lr_scales[i] = 1.0;
    float *s_at = o->state;
    char *n_at = o->names;
    for (int s = 0; s < n_slots; s++) {
        for (int i = 0; i < n_params; i++) {
            const ssl_param *p = &params[i];
            ssl_buffer *b = &o->buffers[s * n_params + i];
            size_t len = strlen(slot_names[s]) + strlen(p->name) + 1;
            snprintf(n_at, len, "%s%s", slot_names[s], p->name);
            b->name = n_at;
            b->data = s_at;
            b->numel = p->numel;
            b->ndim = p->ndim;
            memcpy(b->shape, p->shape, sizeof b->shape);
            n_at += len;
            s_at += round_up(p->numel);
        }
    }
    *out = o;
    return SSL_OK;
}

void ssl_optim_free(ssl_optim *o)
{
    if (!o) return;
    ssl_free(o->state);
    ssl_free(o->buffers);
    ssl_free(o->names);
    ssl_free(o->lr_scales);
    ssl_free(o->param_steps);
    ssl_free(o);
}

/* torch.optim.SGD, dampening 0. buf (n). The first step sets buf = d, which
 * equals mu*0 + d, so zero-initialized buffers need no special case. */
static void sgd_param(const ssl_param *p, float *buf, float lr, float mu, float wd, int nesterov)
{
    float *w = p->data;
    const float *g = p->grad;
    int64_t n = p->numel;
#pragma omp parallel for if (n >= OMP_MIN)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i] + wd * w[i];
        float b = mu * buf[i] + d;
        buf[i] = b;
        w[i] -= lr * (nesterov ? d + mu * b : b);
    }
}

/* LARS as in SimCLR's TF implementation (google-research/simclr,
 * lars_optimizer.py, classic_momentum=True), which solo-learn's LARS with
 * exclude_bias_n_norm reproduces for the excluded params:
 *   d = g + wd*p                                  (no_decay: d = g)
 *   trust = eta*||p||/||d|| if ||p|| > 0 and ||d|| > 0, else 1  (no_decay: 1)
 *   v = mu*v + lr*trust*d                         (v starts at 0)
 *   p -= nesterov ? mu*v + lr*trust*d : v
 * The learning rate sits inside v, so a changing lr only affects new terms.
 * Norms accumulate in double. v (n). */
static void lars_param(const ssl_param *p, float *v, float lr, float mu, float wd, float eta,
                       int nesterov)
{
    float *w = p->data;
    const float *g = p->grad;
    int64_t n = p->numel;
    if (p->no_decay) wd = 0;
    float trust = 1;
    if (!p->no_decay) {
        double ww = 0, dd = 0;
#pragma omp parallel for reduction(+ : ww, dd) if (n >= OMP_MIN)
        for (int64_t i = 0; i < n; i++) {
            float d = g[i] + wd * w[i];
            ww += (double)w[i] * w[i];
            dd += (double)d * d;
        }
        if (ww > 0 && dd > 0) trust = (float)((double)eta * sqrt(ww) / sqrt(dd));
    }
    float scaled = lr * trust;
#pragma omp parallel for if (n >= OMP_MIN)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i] + wd * w[i];
        float nv = mu * v[i] + scaled * d;
        v[i] = nv;
        w[i] -= nesterov ? mu * nv + scaled * d : nv;
    }
}

/* solo-learn's LARS with clip_lr = True (solo/utils/lars.py, from Lightning
 * Bolts; apex's LARC in clip mode), see SSL_OPTIM_LARC. no_decay params (the
 * biases and norms of exclude_bias_n_norm) take plain SGD on g, no decay.
 * Norms accumulate in double. buf (n). */
static void larc_param(const ssl_param *p, float *buf, float lr, float mu, float wd, float eta,
                       int nesterov)
{
    float *w = p->data;
    const float *g = p->grad;
    int64_t n = p->numel;
    float a = 1;
    if (p->no_decay) {
        wd = 0;
    } else {
        double ww = 0, gg = 0;
#pragma omp parallel for reduction(+ : ww, gg) if (n >= OMP_MIN)
        for (int64_t i = 0; i < n; i++) {
            ww += (double)w[i] * w[i];
            gg += (double)g[i] * g[i];
        }
        if (ww > 0 && gg > 0) {
            double pn = sqrt(ww), r = (double)eta * pn / (sqrt(gg) + wd * pn + 1e-8);
            a = (float)(lr > 0 && r / lr < 1 ? r / lr : 1.0);
        } else {
            wd = 0; /* solo-learn adds the decay only where it scales */
        }
    }
#pragma omp parallel for if (n >= OMP_MIN)
    for (int64_t i = 0; i < n; i++) {
        float d = a * (g[i] + wd * w[i]);
        float b = mu * buf[i] + d;
        buf[i] = b;
        w[i] -= lr * (nesterov ? d + mu * b : b);
    }
}

/* torch.optim.AdamW (1.13, single-tensor path). m, v (n). lr is a double
 * as a param group's lr * lr_scale is in Python. */
static void adamw_param(const ssl_param *p, float *m, float *v, double lr, float wd,
                        float b1, float b2, float eps, int64_t t)
{
    float *w = p->data;
    const float *g = p->grad;
    int64_t n = p->numel;
    float decay = (float)(1.0 - lr * (p->no_decay ? 0.0 : (double)wd));
    float c1 = (float)(1.0 - (double)b1), c2 = (float)(1.0 - (double)b2);
    float step_size = (float)(lr / (1.0 - pow((double)b1, (double)t)));
    float bc2_sqrt = (float)sqrt(1.0 - pow((double)b2, (double)t));
#pragma omp parallel for if (n >= OMP_MIN)
    for (int64_t i = 0; i < n; i++) {
        float wi = w[i] * decay;
        float mi = b1 * m[i] + c1 * g[i];
        float vi = b2 * v[i] + c2 * g[i] * g[i];
        m[i] = mi;
        v[i] = vi;
        w[i] = wi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps); /* torch's addcdiv order */
    }
}

void ssl_optim_step(ssl_optim *o, float lr)
{
    const ssl_optim_config *c = &o->cfg;
    o->steps++;
    for (int i = 0; i < o->n_params; i++) {
        const ssl_param *p = &o->params[i];
        /* torch.optim skips a param whose grad is None: no decay, no state */
        if (p->frozen) continue;
        o->param_steps[i]++;
        float *s0 = o->buffers[i].data;
        /* a scale of 1 leaves lr exactly as given */
        double lr_i = (double)lr * o->lr_scales[i];
        switch (c->kind) {
        case SSL_OPTIM_SGD:
            sgd_param(p, s0, (float)lr_i, c->momentum, p->no_decay ? 0.0f : c->weight_decay,
                      c->nesterov);
            break;
        case SSL_OPTIM_LARS:
            lars_param(p, s0, (float)lr_i, c->momentum, c->weight_decay, c->eta, c->nesterov);
            break;
        case SSL_OPTIM_LARC:
            larc_param(p, s0, (float)lr_i, c->momentum, c->weight_decay, c->eta, c->nesterov);
            break;
        case SSL_OPTIM_ADAMW:
            adamw_param(p, s0, o->buffers[o->n_params + i].data, lr_i, c->weight_decay, c->beta1,
                        c->beta2, c->eps, o->param_steps[i]);
            break;
        }
    }
}

int ssl_optim_set_lr_scales(ssl_optim *o, const double *scales, char *err)
{
    for (int i = 0; scales && i < o->n_params; i++)
        if (!(scales[i] >= 0 && isfinite(scales[i])))
            return ssl_fail(err, SSL_EINVAL, "optimizer: lr scale %g of '%s' must be finite and >= 0",
                            scales[i], o->params[i].name);
    for (int i = 0; i < o->n_params; i++) o->lr_scales[i] = scales ? scales[i] : 1.0;
    return SSL_OK;
}

void ssl_optim_set_weight_decay(ssl_optim *o, float wd) { o->cfg.weight_decay = wd; }

float ssl_clip_grad_per_param(ssl_param *params, int n, float clip)
{
    double largest = 0;
    for (int i = 0; i < n; i++) {
        float *g = params[i].grad;
        int64_t numel = params[i].numel;
        double ss = 0;
#pragma omp parallel for reduction(+ : ss) if (numel >= OMP_MIN)
        for (int64_t j = 0; j < numel; j++) ss += (double)g[j] * g[j];
        double norm = sqrt(ss);
        if (norm > largest) largest = norm;
        /* utils.clip_gradients computes on float32 tensors: p.grad.norm(2),
         * then clip / (norm + 1e-6), which PyTorch evaluates as
         * (norm + 1e-6).reciprocal() * clip; the same float steps here (on
         * the norm summed in double) round as PyTorch's. A NaN norm compares
         * false: no clip, as there. */
        float coef = (1.0f / ((float)norm + 1e-6f)) * clip;
        if (coef < 1.0f) {
#pragma omp parallel for if (numel >= OMP_MIN)
            for (int64_t j = 0; j < numel; j++) g[j] *= coef;
        }
    }
    return (float)largest;
}

int ssl_optim_state_count(const ssl_optim *o) { return o->n_params * o->n_slots; }

ssl_buffer ssl_optim_state(const ssl_optim *o, int i)
{
    ssl_buffer none;
    memset(&none, 0, sizeof none);
    if (i < 0 || i >= ssl_optim_state_count(o)) return none;
    return o->buffers[i];
}

int64_t ssl_optim_steps(const ssl_optim *o) { return o->steps; }

void ssl_optim_set_steps(ssl_optim *o, int64_t steps)
{
    o->steps = steps > 0 ? steps : 0;
    for (int i = 0; i < o->n_params; i++) o->param_steps[i] = o->steps;
}

int ssl_optim_param_count(const ssl_optim *o) { return o->n_params; }

const ssl_param *ssl_optim_param(const ssl_optim *o, int i)
{
    return i >= 0 && i < o->n_params ? &o->params[i] : NULL;
}

int64_t ssl_optim_param_steps(const ssl_optim *o, int i)
{
    return i >= 0 && i < o->n_params ? o->param_steps[i] : -1;
}

int ssl_optim_set_param_steps(ssl_optim *o, int i, int64_t steps, char *err)
{
    if (i < 0 || i >= o->n_params)
        return ssl_fail(err, SSL_EINVAL, "optimizer: no param %d (%d params)", i, o->n_params);
    if (steps < 0 || steps > o->steps)
        return ssl_fail(err, SSL_EINVAL, "optimizer: '%s' updated %lld times in %lld steps",
                        o->params[i].name, (long long)steps, (long long)o->steps);
    o->param_steps[i] = steps;
    return SSL_OK;
}

/* The schedule of the weight decay this file applies (the lr and momentum
 * schedules are in schedule.c). */
float ssl_wd_cosine(int64_t step, int64_t total_steps, float base, float final)
{
    if (total_steps <= 0) return base;
    if (step < 0) step = 0;
    if (step > total_steps) step = total_steps;
    double c = cos(3.14159265358979323846 * (double)step / (double)total_steps);
    return (float)((double)final + 0.5 * ((double)base - (double)final) * (1.0 + c));
}
