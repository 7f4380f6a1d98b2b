/* Checkpoints: one safetensors file per save, written atomically.
 * Tensors: encoder (torchvision names), heads (prefixed), BN counters (I64
 * scalars, as PyTorch's num_batches_tracked), optimizer state ("optim.*").
 * Metadata: format, version, method, architecture, training state, config. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/io.h"
#include "selfsup/train.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CKPT_FORMAT "selfsup-checkpoint"
#define CKPT_VERSION "1"

/* prefix + name into buf (names are short; a long one is an error). */
static const char *full_name(char *buf, size_t cap, const char *prefix, const char *name)
{
    int n = snprintf(buf, cap, "%s%s", prefix, name);
    return n > 0 && (size_t)n < cap ? buf : NULL;
}

static int add_registry(ssl_st_writer *w, const char *prefix, const ssl_registry *r, char *err)
{
    int st = SSL_OK;
    char nm[512];
    for (int i = 0; i < r->n_params && !st; i++) {
        const ssl_param *p = &r->params[i];
        st = ssl_st_add(w, full_name(nm, sizeof nm, prefix, p->name), SSL_DT_F32, p->ndim,
                        p->shape, p->data, err);
    }
    for (int i = 0; i < r->n_buffers && !st; i++) {
        const ssl_buffer *b = &r->buffers[i];
        st = ssl_st_add(w, full_name(nm, sizeof nm, prefix, b->name), SSL_DT_F32, b->ndim,
                        b->shape, b->data, err);
    }
    for (int i = 0; i < r->n_counters && !st; i++)
        st = ssl_st_add(w, full_name(nm, sizeof nm, prefix, r->counters[i].name), SSL_DT_I64, 0,
                        NULL, r->counters[i].value, err);
    return st;
}

static int check_format(const ssl_st_file *f, const char *path, char *err);

static const char *stem_name(ssl_stem s) { return s == SSL_STEM_SMALL ? "small" : "imagenet"; }

/* "name=count;..." for the params that some steps left frozen (their
 * update count is below optim_steps, as torch's per-param state['step']);
 * *out stays NULL when there are none. */
static int param_steps_meta(const ssl_optim *opt, char **out, const char *path, char *err)
{
    size_t len = 0;
    FILE *f = NULL;
    for (int i = 0; i < ssl_optim_param_count(opt); i++) {
        int64_t s = ssl_optim_param_steps(opt, i);
        if (s == ssl_optim_steps(opt)) continue;
        if (!f && !(f = open_memstream(out, &len)))
            return ssl_fail(err, SSL_ENOMEM, "%s: out of memory for the checkpoint header", path);
        fprintf(f, "%s%s=%" PRId64, len ? ";" : "", ssl_optim_param(opt, i)->name, s);
        fflush(f);
    }
    if (f) fclose(f);
    return SSL_OK;
}

/* Restores what param_steps_meta wrote, after ssl_optim_set_steps; an
 * unknown name, a count above the steps or a malformed list is an error. */
static int load_param_steps(const ssl_st_file *f, ssl_optim *opt, const char *path, char *err)
{
    const char *v = ssl_st_meta(f, "optim_param_steps");
    while (v && *v) {
        const char *eq = strchr(v, '='), *end = strchr(v, ';');
        if (!end) end = v + strlen(v);
        if (!eq || eq > end)
            return ssl_fail(err, SSL_EFORMAT, "%s: metadata 'optim_param_steps' is malformed", path);
        int i = 0, n = ssl_optim_param_count(opt);
        while (i < n && (strlen(ssl_optim_param(opt, i)->name) != (size_t)(eq - v) ||
                         strncmp(ssl_optim_param(opt, i)->name, v, (size_t)(eq - v))))
            i++;
        char *num_end;
        long long s = strtoll(eq + 1, &num_end, 10);
        if (i == n || num_end != end || num_end == eq + 1)
            return ssl_fail(err, SSL_EFORMAT, "%s: metadata 'optim_param_steps' names no param or no count at '%.*s'",
                            path, (int)(end - v), v);
        char why[SSL_ERR_LEN];
        if (ssl_optim_set_param_steps(opt, i, s, why))
            return ssl_fail(err, SSL_EFORMAT, "%s: metadata 'optim_param_steps': %s", path, why);
        v = *end ? end + 1 : end;
    }
    return SSL_OK;
}

/* train_seconds < 0: not recorded. */
static int checkpoint_write(const char *path, const ssl_train_config *cfg, const ssl_method *m,
                            const ssl_optim *opt, const ssl_train_state *st, double train_seconds,
                            char *err)
{
    ssl_st_writer w;
    ssl_st_writer_init(&w);
    char buf[64];
    char *cfg_json = NULL;
    size_t cfg_len = 0;
    int rc = add_registry(&w, "", m->encoder.reg, err);
    if (!rc) rc = add_registry(&w, "", &m->heads, err);
    for (int i = 0; i < m->n_state && !rc; i++)
        rc = add_registry(&w, m->state[i].prefix, m->state[i].reg, err);
    for (int i = 0; opt && !rc && i < ssl_optim_state_count(opt); i++) {
        ssl_buffer b = ssl_optim_state(opt, i);
        rc = ssl_st_add(&w, b.name, SSL_DT_F32, b.ndim, b.shape, b.data, err);
    }
    FILE *mf = open_memstream(&cfg_json, &cfg_len);
    if (!mf) {
        rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory for the checkpoint header", path);
    } else {
        ssl_train_config_json(cfg, mf);
        fclose(mf);
    }
#define META(k, v) if (!rc) rc = ssl_st_add_meta(&w, (k), (v), err)
    META("format", CKPT_FORMAT);
    META("version", CKPT_VERSION);
    META("method", m->ops->name);
    META("arch", cfg->arch);
    const int vit = m->encoder.cfg.kind == SSL_ENC_VIT;
    snprintf(buf, sizeof buf, "%d", vit ? m->encoder.cfg.vit.embed_dim : m->encoder.cfg.resnet.width);
    META("width", buf);
    if (!vit) META("stem", stem_name(m->encoder.cfg.resnet.stem));
    if (vit) {
        snprintf(buf, sizeof buf, "%d", m->encoder.cfg.vit.img_size);
        META("img_size", buf);
        snprintf(buf, sizeof buf, "%d", m->encoder.cfg.vit.patch);
        META("patch_size", buf);
    }
    snprintf(buf, sizeof buf, "%d", m->encoder.in_channels);
    META("in_channels", buf);
    snprintf(buf, sizeof buf, "%d", m->encoder.feat_dim);
    META("feat_dim", buf);
    snprintf(buf, sizeof buf, "%" PRId64, st->step);
    META("step", buf);
    snprintf(buf, sizeof buf, "%d", st->epoch);
    META("epoch", buf);
    snprintf(buf, sizeof buf, "%d", st->step_in_epoch);
    META("step_in_epoch", buf);
    snprintf(buf, sizeof buf, "%" PRIu64, st->seed);
    META("seed", buf);
    snprintf(buf, sizeof buf, "%" PRId64, opt ? ssl_optim_steps(opt) : (int64_t)0);
    META("optim_steps", buf);
    char *psteps = NULL;
    if (!rc && opt && (rc = param_steps_meta(opt, &psteps, path, err)) == SSL_OK && psteps)
        META("optim_param_steps", psteps);
    free(psteps);
    if (train_seconds >= 0) {
        snprintf(buf, sizeof buf, "%.3f", train_seconds);
        META("train_seconds", buf);
    }
    if (cfg_json) META("config", cfg_json);
#undef META
    if (!rc) rc = ssl_st_write(&w, path, err);
    free(cfg_json);
    ssl_st_writer_free(&w);
    return rc;
}

int ssl_checkpoint_save(const char *path, const ssl_train_config *cfg, const ssl_method *m,
                        const ssl_optim *opt, const ssl_train_state *st, char *err)
{
    return checkpoint_write(path, cfg, m, opt, st, -1, err);
}

int ssl_checkpoint_save_timed(const char *path, const ssl_train_config *cfg, const ssl_method *m,
                              const ssl_optim *opt, const ssl_train_state *st,
                              double train_seconds, char *err)
{
    return checkpoint_write(path, cfg, m, opt, st, train_seconds >= 0 ? train_seconds : 0, err);
}

int ssl_checkpoint_train_seconds(const char *path, double *seconds, char *err)
{
    ssl_st_file f;
    *seconds = -1;
    int rc = ssl_st_load(&f, path, err);
    if (rc) return rc;
    rc = check_format(&f, path, err);
    const char *v = rc ? NULL : ssl_st_meta(&f, "train_seconds");
    if (v) {
        char *end;
        double x = strtod(v, &end);
        if (end == v || *end || !(x >= 0 && x < 1e12))
            rc = ssl_fail(err, SSL_EFORMAT, "%s: metadata 'train_seconds' = '%s' is out of range",
                          path, v);
        else
            *seconds = x;
    }
    ssl_st_free(&f);
    return rc;
}

static int parse_int_meta(const ssl_st_file *f, const char *path, const char *key, int64_t lo,
                          int64_t hi, int64_t *out, char *err)
{
    const char *v = ssl_st_meta(f, key);
    char *end;
    if (!v) return ssl_fail(err, SSL_EFORMAT, "%s: not a selfsup checkpoint (no '%s')", path, key);
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || x < lo || x > hi)
        return ssl_fail(err, SSL_EFORMAT, "%s: metadata '%s' = '%s' is out of range", path, key, v);
    *out = x;
    return SSL_OK;
}

static int check_format(const ssl_st_file *f, const char *path, char *err)
{
    const char *fmt = ssl_st_meta(f, "format"), *ver = ssl_st_meta(f, "version");
    if (!fmt || strcmp(fmt, CKPT_FORMAT))
        return ssl_fail(err, SSL_EFORMAT, "%s: not a selfsup checkpoint (format is '%s')", path,
                        fmt ? fmt : "missing");
    if (!ver || strcmp(ver, CKPT_VERSION))
        return ssl_fail(err, SSL_EFORMAT, "%s: checkpoint version '%s' not supported (want %s)",
                        path, ver ? ver : "missing", CKPT_VERSION);
    return SSL_OK;
}

static void json_str(const ssl_json *o, const char *key, char *dst, size_t cap)
{
    const ssl_json *v = ssl_json_get(o, key);
    if (v && v->type == SSL_JSON_STRING) snprintf(dst, cap, "%s", v->str);
}

static void json_num(const ssl_json *o, const char *key, double *dst)
{
    const ssl_json *v = ssl_json_get(o, key);
    if (v && v->type == SSL_JSON_NUMBER) *dst = v->num;
}

int ssl_checkpoint_read_config(const char *path, ssl_train_config *cfg, int *in_channels,
                               int *img_size, char *err)
{
    ssl_st_file f;
    int rc = ssl_st_load(&f, path, err);
    if (rc) return rc;
    rc = check_format(&f, path, err);
    int64_t ch = 0;
    if (!rc) rc = parse_int_meta(&f, path, "in_channels", 1, 64, &ch, err);
    int64_t side = 0; /* only ViT checkpoints size their position table */
    if (!rc && ssl_st_meta(&f, "img_size"))
        rc = parse_int_meta(&f, path, "img_size", 1, 1 << 16, &side, err);
    const char *cj = rc ? NULL : ssl_st_meta(&f, "config");
    if (!rc && !cj) rc = ssl_fail(err, SSL_EFORMAT, "%s: checkpoint has no config", path);
    ssl_json j;
    memset(&j, 0, sizeof j);
    if (!rc && ssl_json_parse(&j, cj, strlen(cj), err))
        rc = ssl_fail(err, SSL_EFORMAT, "%s: config metadata is not valid JSON", path);
    if (!rc) {
        ssl_train_config_default(cfg);
        double x;
        json_str(&j, "method", cfg->method, sizeof cfg->method);
        json_str(&j, "data", cfg->data, sizeof cfg->data);
        json_str(&j, "arch", cfg->arch, sizeof cfg->arch);
        json_str(&j, "optimizer", cfg->optimizer, sizeof cfg->optimizer);
        json_str(&j, "out", cfg->out, sizeof cfg->out);
        json_str(&j, "lr_scale", cfg->lr_scale, sizeof cfg->lr_scale);
        json_str(&j, "pos_embed", cfg->pos_embed, sizeof cfg->pos_embed);
        json_str(&j, "recipe", cfg->recipe, sizeof cfg->recipe); /* older checkpoints: paper */
        char stem[16] = "";
        json_str(&j, "stem", stem, sizeof stem);
        cfg->stem = strcmp(stem, "imagenet") ? SSL_STEM_SMALL : SSL_STEM_IMAGENET;
#define NUM(key, field, type) x = (double)cfg->field; json_num(&j, key, &x); cfg->field = (type)x
        NUM("width", width, int);
        NUM("patch_size", patch_size, int);
        NUM("vit_depth", vit_depth, int);
        NUM("epochs", epochs, int);
        NUM("steps", steps, int64_t);
        NUM("batch_size", batch_size, int);
        NUM("lr", lr, float);
        NUM("weight_decay", weight_decay, float);
        /* checkpoints from before these options trained without them */
        cfg->weight_decay_end = cfg->clip_grad = cfg->min_lr = cfg->drop_path = 0;
        NUM("weight_decay_end", weight_decay_end, float);
        NUM("clip_grad", clip_grad, float);
        NUM("min_lr", min_lr, float);
        NUM("drop_path", drop_path, float);
        NUM("momentum", momentum, float);
        NUM("warmup_epochs", warmup_epochs, float);
        NUM("seed", seed, uint64_t);
        NUM("knn_every", knn_every, float); /* older checkpoints: 0, off */
#undef NUM
        for (int i = 0; i < ssl_method_n_fields; i++) {
            const ssl_method_field *fd = &ssl_method_fields[i];
            char key[64];
            snprintf(key, sizeof key, "%s", fd->name);
            for (char *p = key; *p; p++) if (*p == '-') *p = '_';
            x = SSL_UNSET;
            json_num(&j, key, &x);
            ssl_method_field_set(&cfg->mcfg, fd, x);
        }
        *in_channels = (int)ch;
        if (img_size) *img_size = (int)side;
    }
    ssl_json_free(&j);
    ssl_st_free(&f);
    return rc;
}

/* Copies one named F32 tensor of numel values, or explains the mismatch. */
static int load_f32(const ssl_st_file *f, const char *path, const char *name, float *dst,
                    int64_t numel, int ndim, const int64_t *shape, char *err)
{
    const ssl_st_entry *e = name ? ssl_st_find(f, name) : NULL;
    if (!e)
        return ssl_fail(err, SSL_ESHAPE, "%s: tensor '%s' missing (checkpoint of another architecture or method?)", path, name);
    int same = e->dtype == SSL_DT_F32 && e->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = e->shape[i] == shape[i];
    if (!same || e->nbytes != sizeof(float) * (size_t)numel) {
        char want[96] = "", got[96] = "";
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "", (long long)shape[i]);
        for (int i = 0; i < e->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)e->shape[i]);
        return ssl_fail(err, SSL_ESHAPE, "%s: tensor '%s' is %s [%s], the model needs F32 [%s] (checkpoint of another architecture?)",
                        path, name, ssl_dtype_name(e->dtype), got, want);
    }
    memcpy(dst, e->data, e->nbytes);
    return SSL_OK;
}

static int load_registry(const ssl_st_file *f, const char *path, const char *prefix,
                         ssl_registry *r, char *err)
{
    char nm[512];
    for (int i = 0; i < r->n_params; i++) {
        ssl_param *p = &r->params[i];
        int rc = load_f32(f, path, full_name(nm, sizeof nm, prefix, p->name), p->data, p->numel,
                          p->ndim, p->shape, err);
        if (rc) return rc;
    }
    for (int i = 0; i < r->n_buffers; i++) {
        ssl_buffer *b = &r->buffers[i];
        int rc = load_f32(f, path, full_name(nm, sizeof nm, prefix, b->name), b->data, b->numel,
                          b->ndim, b->shape, err);
        if (rc) return rc;
    }
    for (int i = 0; i < r->n_counters; i++) {
        const char *name = full_name(nm, sizeof nm, prefix, r->counters[i].name);
        const ssl_st_entry *e = name ? ssl_st_find(f, name) : NULL;
        if (!e || e->dtype != SSL_DT_I64 || e->nbytes != sizeof(int64_t))
            return ssl_fail(err, SSL_EFORMAT, "%s: counter '%s%s' missing or not an I64 scalar",
                            path, prefix, r->counters[i].name);
        memcpy(r->counters[i].value, e->data, sizeof(int64_t));
    }
    return SSL_OK;
}

int ssl_checkpoint_load_tensors(const ssl_st_file *f, const char *path, ssl_method *m, char *err)
{
    int rc = load_registry(f, path, "", m->encoder.reg, err);
    if (!rc) rc = load_registry(f, path, "", &m->heads, err);
    for (int i = 0; i < m->n_state && !rc; i++)
        rc = load_registry(f, path, m->state[i].prefix, m->state[i].reg, err);
    return rc;
}

#define STATE_FORMAT "selfsup-state"

static ssl_registry *find_state(const ssl_method *m, const char *prefix, char *err)
{
    for (int i = 0; i < m->n_state; i++)
        if (!strcmp(m->state[i].prefix, prefix)) return m->state[i].reg;
    ssl_fail(err, SSL_EINVAL, "%s keeps no '%s' state", m->ops->name, prefix);
    return NULL;
}

int ssl_checkpoint_save_state(const char *path, const ssl_method *m, const char *prefix, char *err)
{
    const ssl_registry *r = find_state(m, prefix, err);
    if (!r) return SSL_EINVAL;
    ssl_st_writer w;
    ssl_st_writer_init(&w);
    int rc = add_registry(&w, prefix, r, err);
    if (!rc) rc = ssl_st_add_meta(&w, "format", STATE_FORMAT, err);
    if (!rc) rc = ssl_st_add_meta(&w, "version", CKPT_VERSION, err);
    if (!rc) rc = ssl_st_add_meta(&w, "method", m->ops->name, err);
    if (!rc) rc = ssl_st_add_meta(&w, "prefix", prefix, err);
    if (!rc) rc = ssl_st_write(&w, path, err);
    ssl_st_writer_free(&w);
    return rc;
}

int ssl_checkpoint_load_state(const char *path, ssl_method *m, const char *prefix, char *err)
{
    ssl_registry *r = find_state(m, prefix, err);
    if (!r) return SSL_EINVAL;
    ssl_st_file f;
    int rc = ssl_st_load(&f, path, err);
    if (rc) return rc;
    const char *fmt = ssl_st_meta(&f, "format"), *meth = ssl_st_meta(&f, "method"),
               *pre = ssl_st_meta(&f, "prefix"), *ver = ssl_st_meta(&f, "version");
    if (!fmt || strcmp(fmt, STATE_FORMAT) || !pre || !ver)
        rc = ssl_fail(err, SSL_EFORMAT, "%s: not a selfsup state file (format is '%s')", path,
                      fmt ? fmt : "missing");
    else if (strcmp(ver, CKPT_VERSION))
        rc = ssl_fail(err, SSL_EFORMAT, "%s: state file version '%s' not supported (want %s)", path,
                      ver, CKPT_VERSION);
    else if (!meth || strcmp(meth, m->ops->name) || strcmp(pre, prefix))
        rc = ssl_fail(err, SSL_EINVAL, "%s: holds %s's '%s' state, not %s's '%s'", path,
                      meth ? meth : "?", pre, m->ops->name, prefix);
    if (!rc) rc = load_registry(&f, path, prefix, r, err);
    ssl_st_free(&f);
    return rc;
}

int ssl_checkpoint_load(const char *path, ssl_method *m, ssl_optim *opt, ssl_train_state *st,
                        char *err)
{
    ssl_st_file f;
    int rc = ssl_st_load(&f, path, err);
    if (rc) return rc;
    rc = check_format(&f, path, err);
    const char *meth = rc ? NULL : ssl_st_meta(&f, "method");
    if (!rc && (!meth || strcmp(meth, m->ops->name)))
        rc = ssl_fail(err, SSL_EINVAL, "%s: checkpoint of method '%s', not '%s'", path,
                      meth ? meth : "?", m->ops->name);
    if (!rc) rc = ssl_checkpoint_load_tensors(&f, path, m, err);
    for (int i = 0; opt && !rc && i < ssl_optim_state_count(opt); i++) {
        ssl_buffer b = ssl_optim_state(opt, i);
        rc = load_f32(&f, path, b.name, b.data, b.numel, b.ndim, b.shape, err);
    }
    int64_t step = 0, epoch = 0, sie = 0, osteps = 0;
    if (!rc && st) {
        rc = parse_int_meta(&f, path, "step", 0, INT64_MAX, &step, err);
        if (!rc) rc = parse_int_meta(&f, path, "epoch", 0, INT32_MAX, &epoch, err);
        if (!rc) rc = parse_int_meta(&f, path, "step_in_epoch", 0, INT32_MAX, &sie, err);
        const char *sv = ssl_st_meta(&f, "seed");
        if (!rc && !sv) rc = ssl_fail(err, SSL_EFORMAT, "%s: no seed in checkpoint", path);
        if (!rc) {
            st->step = step;
            st->epoch = (int)epoch;
            st->step_in_epoch = (int)sie;
            st->seed = strtoull(sv, NULL, 10);
        }
    }
    if (!rc && opt) {
        rc = parse_int_meta(&f, path, "optim_steps", 0, INT64_MAX, &osteps, err);
        if (!rc) ssl_optim_set_steps(opt, osteps);
        if (!rc) rc = load_param_steps(&f, opt, path, err);
    }
    ssl_st_free(&f);
    return rc;
}
