/* Batch loader: worker threads fill a ring of batch slots ahead of the
 * training loop. Batch g (= epoch * steps_per_epoch + step) always goes to
 * slot g % n_slots and its content depends only on (seed, g), so the output
 * is the same for any number of workers. A seek bumps a generation counter:
 * slots still being filled for the old position are discarded when done. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/data.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { SLOT_EMPTY, SLOT_FILLING, SLOT_READY };

typedef struct worker_arg {
    struct ssl_loader *l;
    int id; /* index into l->scratch */
} worker_arg;

typedef struct loader_slot {
    int state;
    int64_t g;      /* global batch index held or being filled */
    uint64_t gen;   /* seek generation it was assigned in */
    float **views;  /* n_views pointers, each (batch, c, out_h, out_w) */
    int32_t *labels; /* (batch) */
    int32_t *idx;   /* (batch) dataset indices of the batch */
    ssl_crop_geo **geo; /* n_views pointers, each (batch), into geo[0]'s block */
} loader_slot;

struct ssl_loader {
    const ssl_dataset *ds;
    ssl_aug *augs; /* (n_views) */
    int n_views, batch, spe;
    uint64_t seed;
    int n_workers, n_slots, n_started;
    size_t scratch_floats;
    loader_slot *slots;  /* (n_slots) */
    pthread_t *threads;  /* (n_workers) */
    float **scratch;     /* (max(n_workers, 1)): one augmentation buffer per thread */
    worker_arg *args;    /* (max(n_workers, 1)) */

    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* a slot became free, or stop */
    pthread_cond_t ready_cv; /* a slot became ready */
    int64_t next_assign, consume;
    int held; /* the consumer still holds slot consume % n_slots */
    uint64_t gen;
    atomic_int stop;
    int32_t *perm;      /* (n) order of epoch perm_epoch */
    int64_t perm_epoch;
};

/* Under l->mu. The epoch's order depends on (seed, epoch) only. */
static void ensure_perm(ssl_loader *l, int64_t epoch)
{
    if (l->perm_epoch == epoch) return;
    int n = l->ds->n;
    for (int i = 0; i < n; i++) l->perm[i] = i;
    ssl_rng r;
    ssl_rng_derive(&r, l->seed, (uint64_t)epoch, UINT64_MAX); /* b never a view index */
    for (int i = n - 1; i > 0; i--) {
        int j = (int)ssl_rng_below(&r, (uint32_t)(i + 1));
        int32_t t = l->perm[i];
        l->perm[i] = l->perm[j];
        l->perm[j] = t;
    }
    l->perm_epoch = epoch;
}

/* Under l->mu: can the next batch be assigned to its slot now? */
static int can_assign(const ssl_loader *l)
{
    return l->next_assign < l->consume + l->n_slots &&
           l->slots[l->next_assign % l->n_slots].state == SLOT_EMPTY;
}

/* Under l->mu: claims the next batch's slot and writes its sample indices. */
static loader_slot *assign(ssl_loader *l)
{
    int64_t g = l->next_assign++;
    loader_slot *s = &l->slots[g % l->n_slots];
    s->state = SLOT_FILLING;
    s->g = g;
    s->gen = l->gen;
    int64_t epoch = g / l->spe, step = g % l->spe;
    ensure_perm(l, epoch);
    memcpy(s->idx, l->perm + step * l->batch, (size_t)l->batch * sizeof *s->idx);
    return s;
}

/* Without the lock: augments the slot's samples. Returns 0 if stopped early. */
static int fill(ssl_loader *l, loader_slot *s, float *scratch)
{
    const ssl_dataset *ds = l->ds;
    const size_t img_sz = (size_t)ds->c * ds->h * ds->w;
    const uint64_t epoch = (uint64_t)(s->g / l->spe);
    for (int i = 0; i < l->batch; i++) {
        if (atomic_load_explicit(&l->stop, memory_order_relaxed)) return 0;
        int idx = s->idx[i];
        const uint8_t *src = ds->images + (size_t)idx * img_sz;
        for (int v = 0; v < l->n_views; v++) {
            const ssl_aug *a = &l->augs[v];
            size_t view_sz = (size_t)ds->c * a->out_h * a->out_w;
            ssl_rng r;
            ssl_rng_derive(&r, l->seed, epoch * (uint64_t)ds->n + (uint64_t)idx, (uint64_t)v);
            ssl_aug_apply_geo(a, src, ds->c, ds->h, ds->w, s->views[v] + (size_t)i * view_sz,
                              scratch, &r, &s->geo[v][i]);
        }
        s->labels[i] = ds->labels ? ds->labels[idx] : 0;
    }
    return 1;
}

/* Under l->mu: a fill finished; keep it only if no seek happened meanwhile. */
static void finish(ssl_loader *l, loader_slot *s, int complete)
{
    if (complete && s->gen == l->gen) {
        s->state = SLOT_READY;
        pthread_cond_broadcast(&l->ready_cv);
    } else {
        s->state = SLOT_EMPTY;
        pthread_cond_broadcast(&l->work_cv);
    }
}

static void *worker_main(void *arg)
{
    ssl_loader *l = ((worker_arg *)arg)->l;
    float *scratch = l->scratch[((worker_arg *)arg)->id];
    pthread_mutex_lock(&l->mu);
    while (!atomic_load(&l->stop)) {
        if (!can_assign(l)) {
            pthread_cond_wait(&l->work_cv, &l->mu);
            continue;
        }
        loader_slot *s = assign(l);
        pthread_mutex_unlock(&l->mu);
        int complete = fill(l, s, scratch);
        pthread_mutex_lock(&l->mu);
        finish(l, s, complete);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void free_slots(ssl_loader *l)
{
    if (!l->slots) return;
    for (int i = 0; i < l->n_slots; i++) {
        loader_slot *s = &l->slots[i];
        if (s->views)
            for (int v = 0; v < l->n_views; v++) ssl_free(s->views[v]);
        free(s->views);
        if (s->geo) free(s->geo[0]);
        free(s->geo);
        free(s->labels);
        free(s->idx);
    }
    free(l->slots);
}

int ssl_loader_create(ssl_loader **out, const ssl_dataset *ds, const ssl_aug *augs, int n_views,
                      int batch, uint64_t seed, int n_workers, char *err)
{
    *out = NULL;
    if (!ds || !ds->images || ds->n < 1)
        return ssl_fail(err, SSL_EINVAL, "loader: empty dataset");
    if (ds->c != 1 && ds->c != 3)
        return ssl_fail(err, SSL_EINVAL, "loader: %s: %d channels (1 or 3 supported)", ds->source,
                        ds->c);
    if (n_views < 1 || n_views > 64)
        return ssl_fail(err, SSL_EINVAL, "loader: n_views %d not in [1, 64]", n_views);
    if (batch < 1 || batch > ds->n)
        return ssl_fail(err, SSL_EINVAL, "loader: batch %d not in [1, %d] (dataset size)", batch,
                        ds->n);
    if (n_workers < 0 || n_workers > 256)
        return ssl_fail(err, SSL_EINVAL, "loader: n_workers %d not in [0, 256]", n_workers);
    for (int v = 0; v < n_views; v++)
        if (augs[v].out_h < 1 || augs[v].out_w < 1 || augs[v].out_h > 4096 || augs[v].out_w > 4096)
            return ssl_fail(err, SSL_EINVAL, "loader: view %d: bad output size %dx%d", v,
                            augs[v].out_h, augs[v].out_w);

    ssl_loader *l = calloc(1, sizeof *l);
    if (!l) return ssl_fail(err, SSL_ENOMEM, "loader: out of memory");
    l->ds = ds;
    l->n_views = n_views;
    l->batch = batch;
    l->spe = ds->n / batch;
    l->seed = seed;
    l->n_workers = n_workers;
    l->n_slots = n_workers + 2; /* every worker busy + one held by the consumer + one ready */
    l->perm_epoch = -1;
    atomic_init(&l->stop, 0);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work_cv, NULL);
    pthread_cond_init(&l->ready_cv, NULL);

    l->augs = malloc((size_t)n_views * sizeof *l->augs);
    l->perm = malloc((size_t)ds->n * sizeof *l->perm);
    l->slots = calloc((size_t)l->n_slots, sizeof *l->slots);
    l->threads = calloc((size_t)(n_workers ? n_workers : 1), sizeof *l->threads);
    int ok = l->augs && l->perm && l->slots && l->threads;
    for (int v = 0; ok && v < n_views; v++) {
        l->augs[v] = augs[v];
        size_t s = ssl_aug_scratch_floats(&augs[v], ds->c, ds->h, ds->w);
        if (s > l->scratch_floats) l->scratch_floats = s;
    }
    for (int i = 0; ok && i < l->n_slots; i++) {
        loader_slot *s = &l->slots[i];
        s->views = calloc((size_t)n_views, sizeof *s->views);
        s->labels = malloc((size_t)batch * sizeof *s->labels);
        s->idx = malloc((size_t)batch * sizeof *s->idx);
        s->geo = calloc((size_t)n_views, sizeof *s->geo);
        ok = s->views && s->labels && s->idx && s->geo &&
             (s->geo[0] = malloc((size_t)n_views * batch * sizeof **s->geo));
        for (int v = 1; ok && v < n_views; v++) s->geo[v] = s->geo[0] + (size_t)v * batch;
        for (int v = 0; ok && v < n_views; v++) {
            size_t sz = (size_t)batch * ds->c * augs[v].out_h * augs[v].out_w;
            s->views[v] = ssl_malloc(sz * sizeof(float));
            ok = s->views[v] != NULL;
        }
    }
    int n_scratch = n_workers ? n_workers : 1;
    l->scratch = ok ? calloc((size_t)n_scratch, sizeof *l->scratch) : NULL;
    l->args = ok ? calloc((size_t)n_scratch, sizeof *l->args) : NULL;
    ok = ok && l->scratch && l->args;
    for (int i = 0; ok && i < n_scratch; i++) {
        l->scratch[i] = ssl_malloc(l->scratch_floats * sizeof(float));
        l->args[i].l = l;
        l->args[i].id = i;
        ok = l->scratch[i] != NULL;
    }
    if (!ok) {
        ssl_loader_free(l);
        return ssl_fail(err, SSL_ENOMEM, "loader: out of memory for %d slots of %d x %d views",
                        n_workers + 2, batch, n_views);
    }
    for (int i = 0; i < n_workers; i++) {
        if (pthread_create(&l->threads[i], NULL, worker_main, &l->args[i]) != 0) {
            ssl_loader_free(l);
            return ssl_fail(err, SSL_ENOMEM, "loader: cannot start worker thread %d", i);
        }
        l->n_started++;
    }
    *out = l;
    return SSL_OK;
}

int ssl_loader_steps_per_epoch(const ssl_loader *l) { return l->spe; }

void ssl_loader_seek(ssl_loader *l, int epoch, int step)
{
    if (epoch < 0) epoch = 0;
    if (step < 0) step = 0;
    pthread_mutex_lock(&l->mu);
    l->gen++;
    for (int i = 0; i < l->n_slots; i++)
        if (l->slots[i].state == SLOT_READY) l->slots[i].state = SLOT_EMPTY;
    /* slots still FILLING stay busy until their worker finishes and drops them */
    l->consume = l->next_assign = (int64_t)epoch * l->spe + step;
    l->held = 0;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
}

int ssl_loader_next(ssl_loader *l, float *const **views, const int32_t **labels, int *epoch,
                    int *step, char *err)
{
    if (!l) return ssl_fail(err, SSL_EINVAL, "loader: NULL");
    pthread_mutex_lock(&l->mu);
    if (l->held) {
        l->slots[l->consume % l->n_slots].state = SLOT_EMPTY;
        l->consume++;
        l->held = 0;
        pthread_cond_broadcast(&l->work_cv);
    }
    loader_slot *s = &l->slots[l->consume % l->n_slots];
    if (l->n_workers == 0) {
        loader_slot *t = assign(l); /* the ring is empty: t == s */
        pthread_mutex_unlock(&l->mu);
        fill(l, t, l->scratch[0]);
        pthread_mutex_lock(&l->mu);
        finish(l, t, 1);
    }
    while (!(s->state == SLOT_READY && s->g == l->consume && s->gen == l->gen))
        pthread_cond_wait(&l->ready_cv, &l->mu);
    l->held = 1;
    *views = s->views;
    if (labels) *labels = l->ds->labels ? s->labels : NULL;
    if (epoch) *epoch = (int)(s->g / l->spe);
    if (step) *step = (int)(s->g % l->spe);
    pthread_mutex_unlock(&l->mu);
    return SSL_OK;
}

const ssl_crop_geo *const *ssl_loader_geo(ssl_loader *l)
{
    pthread_mutex_lock(&l->mu);
    ssl_crop_geo **geo = l->held ? l->slots[l->consume % l->n_slots].geo : NULL;
    pthread_mutex_unlock(&l->mu);
    return (const ssl_crop_geo *const *)geo;
}

void ssl_loader_free(ssl_loader *l)
{
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    atomic_store(&l->stop, 1);
    pthread_cond_broadcast(&l->work_cv);
    pthread_cond_broadcast(&l->ready_cv);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->n_started; i++) pthread_join(l->threads[i], NULL);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->work_cv);
    pthread_cond_destroy(&l->ready_cv);
    free_slots(l);
    if (l->scratch)
        for (int i = 0; i < (l->n_workers ? l->n_workers : 1); i++) ssl_free(l->scratch[i]);
    free(l->scratch);
    free(l->args);
    free(l->threads);
    free(l->perm);
    free(l->augs);
    free(l);
}
