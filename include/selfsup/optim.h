/* Optimizers (SGD, LARS, AdamW) over an array of ssl_param, learning-rate and
 * momentum schedules, and the EMA update used by BYOL/DINO-style teachers.
 * An optimizer owns its state (momentum, Adam moments) in one allocation made
 * at creation; a step allocates nothing. Params with no_decay get no weight
 * decay (and, for LARS, no trust ratio): the usual bias / BN exclusion. */
#ifndef SELFSUP_OPTIM_H
#define SELFSUP_OPTIM_H

#include "selfsup/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ssl_optim_kind {
    SSL_OPTIM_SGD = 0,
    SSL_OPTIM_LARS,
    SSL_OPTIM_ADAMW,
    /* solo-learn's LARS with clip_lr (Lightning Bolts' LARS = apex's LARC in
     * clip mode), the optimizer of its CIFAR recipes: per param with decay,
     * a = min(eta*||p|| / (||g|| + wd*||p|| + 1e-8) / lr, 1) (when ||p|| and
     * ||g|| > 0), d = a*(g + wd*p); otherwise d = g; then torch.optim.SGD
     * with momentum on d: buf = mu*buf + d, p -= lr*(nesterov ? d + mu*buf : buf).
     * The step of a layer is min(eta*||p||/||g+..||, lr): lr caps it. */
    SSL_OPTIM_LARC
} ssl_optim_kind;

typedef struct ssl_optim_config {
    ssl_optim_kind kind;
    /* lr is the base rate (schedules start from it); each step gets its own lr.
     * SGD follows torch.optim.SGD (dampening 0): d = g + wd*p;
     * buf = mu*buf + d (buf = d on the first step); p -= lr*(nesterov ? d + mu*buf : buf). */
    float lr, momentum, weight_decay;
    int nesterov;                 /* SGD and LARS; needs momentum > 0 */
    float eta;                    /* LARS trust coefficient (SimCLR: 0.001; LARC, solo-learn: 0.02) */
    float beta1, beta2, eps;      /* AdamW, torch.optim.AdamW semantics */
} ssl_optim_config;

typedef struct ssl_optim ssl_optim;

/* params: n_params records that must outlive the optimizer (data/grad are
 * read at every step). Each needs a name (state names derive from it), data,
 * grad, numel > 0 and a shape whose product is numel. */
int ssl_optim_create(ssl_optim **out, const ssl_optim_config *cfg, ssl_param *params,
                     int n_params, char *err);
/* One step with learning rate lr (the schedule's value for this step). */
void ssl_optim_step(ssl_optim *o, float lr);
void ssl_optim_free(ssl_optim *o);
/* Per-parameter learning-rate multipliers (layer-wise lr decay): param i
 * steps with lr * scales[i], weight decay included, as a PyTorch param
 * group's lr. scales (n_params), finite and >= 0, copied; NULL restores 1. */
int ssl_optim_set_lr_scales(ssl_optim *o, const double *scales, char *err);
/* The weight decay of the decayed params from the next step on (a weight
 * decay schedule, as main_dino.py sets param_groups[0]["weight_decay"]
 * each iteration); no_decay params stay at 0. wd finite and >= 0. */
void ssl_optim_set_weight_decay(ssl_optim *o, float wd);
/* DINO's utils.clip_gradients: for each param, norm = ||grad||_2 (summed in
 * double) and, when clip / (norm + 1e-6) < 1, grad *= that coefficient; each
 * param is clipped on its own, not by the global norm. params (n), clip > 0.
 * Returns the largest norm before clipping (0 when n is 0). */
float ssl_clip_grad_per_param(ssl_param *params, int n, float clip);

/* State for checkpoints: named float buffers shaped like their param,
 * "optim.momentum.<name>" (SGD, LARS) or "optim.exp_avg.<name>" and
 * "optim.exp_avg_sq.<name>" (AdamW), plus the step count. Restore by writing
 * into the buffers' data, then calling ssl_optim_set_steps. */
int ssl_optim_state_count(const ssl_optim *o);
/* Out-of-range i gives a zeroed buffer (name NULL). */
ssl_buffer ssl_optim_state(const ssl_optim *o, int i);
int64_t ssl_optim_steps(const ssl_optim *o);
void ssl_optim_set_steps(ssl_optim *o, int64_t steps); /* negative means 0; every param too */
/* Steps that updated param i (those where it was not frozen): AdamW's bias
 * correction counts these, as torch's per-param state['step']. -1 for no
 * such param. Restore after ssl_optim_set_steps; a count above the steps
 * is an error. */
int ssl_optim_param_count(const ssl_optim *o);
const ssl_param *ssl_optim_param(const ssl_optim *o, int i); /* NULL out of range */
int64_t ssl_optim_param_steps(const ssl_optim *o, int i);
int ssl_optim_set_param_steps(ssl_optim *o, int i, int64_t steps, char *err);

/* Linear warm-up base*(step+1)/warmup_steps for step < warmup_steps, then
 * cosine decay from base_lr (at step == warmup_steps) to final_lr (at
 * step == total_steps, and after). */
float ssl_lr_warmup_cosine(int64_t step, int64_t warmup_steps, int64_t total_steps,
                           float base_lr, float final_lr);
/* SimCLR's learning-rate scaling: "linear" lr = base_lr * batch / 256 (the
 * rule of Goyal et al., used for LARS at large batches) and "sqrt"
 * lr = base_lr * sqrt(batch) (SimCLR's choice for small batches). */
float ssl_lr_scale_linear(float base_lr, int64_t batch);
float ssl_lr_scale_sqrt(float base_lr, int64_t batch);
/* Cosine ramp of a teacher momentum from base to 1 (BYOL, DINO):
 * tau = 1 - (1 - base) * (cos(pi * step / total) + 1) / 2, step clamped to [0, total]. */
float ssl_momentum_cosine(int64_t step, int64_t total_steps, float base);
/* The same ramp from base to final (solo-learn's MomentumUpdater):
 * final - (final - base) * (cos(pi * step / total) + 1) / 2; final == base
 * gives base exactly (a constant momentum). */
float ssl_momentum_cosine_to(int64_t step, int64_t total_steps, float base, float final);
/* Cosine schedule of the weight decay from base (step 0) to final (step
 * total_steps): final + (base - final) * (1 + cos(pi * step / total)) / 2,
 * step clamped to [0, total]. DINO's utils.cosine_scheduler(base, final,
 * epochs, niter_per_ep) without warm-up gives the same value at i =
 * step < total (its length is total); it never reaches final itself. */
float ssl_wd_cosine(int64_t step, int64_t total_steps, float base, float final);
/* target = m*target + (1-m)*online; target, online (n). */
void ssl_ema_update(float *target, const float *online, int64_t n, float m);

#ifdef __cplusplus
}
#endif
#endif
