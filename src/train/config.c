/* Training configuration: defaults and JSON form (logs, checkpoints, --json). */
#include "selfsup/io.h"
#include "selfsup/train.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ssl_train_config_default(ssl_train_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->method, sizeof c->method, "simclr");
    snprintf(c->data, sizeof c->data, "fashion-mnist");
    snprintf(c->arch, sizeof c->arch, "resnet18");
    c->width = 16;
    c->stem = SSL_STEM_SMALL;
    c->patch_size = 4;
    snprintf(c->pos_embed, sizeof c->pos_embed, "learned");
    c->epochs = 2;
    c->batch_size = 256;
    /* optimizer, lr, lr_scale, weight decay, momentum, warm-up, out and the
     * method's hyperparameters: unset, the method's recipe fills them */
    c->lr = c->weight_decay = c->momentum = c->warmup_epochs = SSL_UNSET;
    c->weight_decay_end = c->clip_grad = c->min_lr = c->drop_path = SSL_UNSET;
    ssl_method_config_unset(&c->mcfg);
    c->threads = 0;
    c->workers = 1;
    c->seed = 1;
    c->log_every = 20;
}

const ssl_method_optim *ssl_train_config_recipe(const ssl_train_config *c, const ssl_method_ops *ops)
{
    if (!strcmp(c->recipe, "cifar") && ops->optim_cifar.optimizer) return &ops->optim_cifar;
    return !strncmp(c->arch, "vit", 3) && ops->optim_vit.optimizer ? &ops->optim_vit : &ops->optim;
}

/* ops->cifar_fields into c->mcfg where the user left a field unset. */
static int apply_cifar_fields(ssl_method_config *m, const ssl_method_ops *ops, char *err)
{
    const char *p = ops->cifar_fields ? ops->cifar_fields : "";
    while (*p) {
        while (*p == ' ') p++;
        const char *eq = strchr(p, '=');
        if (!*p) break;
        int i = 0;
        for (; eq && i < ssl_method_n_fields; i++)
            if (strlen(ssl_method_fields[i].name) == (size_t)(eq - p) &&
                !strncmp(ssl_method_fields[i].name, p, (size_t)(eq - p)))
                break;
        if (!eq || i == ssl_method_n_fields) /* a bug in a method's table */
            return ssl_fail(err, SSL_EINVAL, "%s: malformed cifar_fields at '%s'", ops->name, p);
        char *end;
        double v = strtod(eq + 1, &end);
        if (ssl_method_field_get(m, &ssl_method_fields[i]) == SSL_UNSET)
            ssl_method_field_set(m, &ssl_method_fields[i], v);
        p = end;
    }
    return SSL_OK;
}

int ssl_train_config_resolve(ssl_train_config *c, char *err)
{
    const ssl_method_ops *ops = ssl_method_find(c->method);
    if (!ops) return ssl_fail(err, SSL_EINVAL, "--method '%s' unknown", c->method);
    if (c->recipe[0] && strcmp(c->recipe, "paper") && strcmp(c->recipe, "cifar"))
        return ssl_fail(err, SSL_EINVAL, "--recipe '%s' unknown (paper, cifar)", c->recipe);
    if (!strcmp(c->recipe, "cifar")) {
        if (!ops->optim_cifar.optimizer)
            return ssl_fail(err, SSL_EINVAL, "--recipe cifar: %s has no CIFAR recipe (solo-learn's: simclr, "
                            "moco, byol, simsiam, swav, dino, barlow, vicreg)", c->method);
        if (!strncmp(c->arch, "vit", 3))
            return ssl_fail(err, SSL_EINVAL, "--recipe cifar is for ResNets (solo-learn's CIFAR configs), not %s",
                            c->arch);
        int rc = apply_cifar_fields(&c->mcfg, ops, err);
        if (rc) return rc;
    }
    const ssl_method_optim *o = ssl_train_config_recipe(c, ops);
    if (!c->optimizer[0]) snprintf(c->optimizer, sizeof c->optimizer, "%s", o->optimizer);
    if (!c->lr_scale[0]) snprintf(c->lr_scale, sizeof c->lr_scale, "%s", o->lr_scale);
    if (c->lr == SSL_UNSET) c->lr = o->lr;
    if (c->weight_decay == SSL_UNSET) c->weight_decay = o->weight_decay;
    if (c->weight_decay_end == SSL_UNSET) c->weight_decay_end = o->weight_decay_end;
    if (c->clip_grad == SSL_UNSET) c->clip_grad = o->clip_grad;
    if (c->min_lr == SSL_UNSET) c->min_lr = o->min_lr;
    if (c->drop_path == SSL_UNSET) c->drop_path = o->drop_path;
    if (c->momentum == SSL_UNSET) c->momentum = o->momentum;
    if (c->warmup_epochs == SSL_UNSET) c->warmup_epochs = o->warmup_epochs;
    if (!c->out[0]) snprintf(c->out, sizeof c->out, "runs/%s", c->method);
    if (!(c->weight_decay_end >= 0 && isfinite(c->weight_decay_end)))
        return ssl_fail(err, SSL_EINVAL, "--weight-decay-end %g must be finite and >= 0",
                        (double)c->weight_decay_end);
    if (!(c->knn_every >= 0 && c->knn_every <= 100000))
        return ssl_fail(err, SSL_EINVAL, "--knn-every %g must be in [0, 100000] epochs (0: off)",
                        (double)c->knn_every);
    if (!(c->clip_grad >= 0 && isfinite(c->clip_grad)))
        return ssl_fail(err, SSL_EINVAL, "--clip-grad %g must be finite and >= 0", (double)c->clip_grad);
    if (!(c->min_lr >= 0 && isfinite(c->min_lr)))
        return ssl_fail(err, SSL_EINVAL, "--min-lr %g must be finite and >= 0", (double)c->min_lr);
    if (!(c->drop_path >= 0 && c->drop_path < 1))
        return ssl_fail(err, SSL_EINVAL, "--drop-path %g must be in [0, 1)", (double)c->drop_path);
    if (c->drop_path > 0 && strncmp(c->arch, "vit", 3))
        return ssl_fail(err, SSL_EINVAL, "--drop-path needs a ViT (--arch vit_*), not %s", c->arch);
    return ssl_method_config_check_ranges(&c->mcfg, err);
}

void ssl_train_config_json(const ssl_train_config *c, FILE *f)
{
    fprintf(f, "{\"method\":");
    ssl_json_write_string(f, c->method);
    fprintf(f, ",\"data\":");
    ssl_json_write_string(f, c->data);
    fprintf(f, ",\"arch\":");
    ssl_json_write_string(f, c->arch);
    fprintf(f, ",\"width\":%d,\"stem\":\"%s\",\"epochs\":%d,\"steps\":%" PRId64
               ",\"batch_size\":%d,\"optimizer\":",
            c->width, c->stem == SSL_STEM_SMALL ? "small" : "imagenet", c->epochs, c->steps,
            c->batch_size);
    ssl_json_write_string(f, c->optimizer);
    fprintf(f, ",\"patch_size\":%d,\"vit_depth\":%d,\"pos_embed\":", c->patch_size, c->vit_depth);
    ssl_json_write_string(f, c->pos_embed);
    fprintf(f, ",\"lr_scale\":");
    ssl_json_write_string(f, c->lr_scale);
    fprintf(f, ",\"recipe\":");
    ssl_json_write_string(f, c->recipe[0] ? c->recipe : "paper");
    fprintf(f, ",\"lr\":%.9g,\"weight_decay\":%.9g,\"weight_decay_end\":%.9g,\"clip_grad\":%.9g"
               ",\"min_lr\":%.9g,\"drop_path\":%.9g"
               ",\"momentum\":%.9g,\"warmup_epochs\":%.9g,\"threads\":%d,\"seed\":%" PRIu64,
            c->lr, c->weight_decay, c->weight_decay_end, c->clip_grad, c->min_lr, c->drop_path,
            c->momentum, c->warmup_epochs, c->threads, c->seed);
    for (int i = 0; i < ssl_method_n_fields; i++) {
        const ssl_method_field *fd = &ssl_method_fields[i];
        double v = ssl_method_field_get(&c->mcfg, fd);
        if (v == SSL_UNSET) continue;
        fputs(",\"", f);
        for (const char *p = fd->name; *p; p++) fputc(*p == '-' ? '_' : *p, f);
        fprintf(f, fd->is_int ? "\":%.0f" : "\":%.9g", v);
    }
    fprintf(f, ",\"knn_every\":%.9g", (double)c->knn_every);
    fprintf(f, ",\"out\":");
    ssl_json_write_string(f, c->out);
    fprintf(f, "}");
}

int ssl_train_encoder_config(const ssl_train_config *c, int in_channels, int img_size,
                             ssl_encoder_config *enc, char *err)
{
    memset(enc, 0, sizeof *enc);
    if (!strncmp(c->arch, "vit", 3)) {
        enc->kind = SSL_ENC_VIT;
        ssl_vit_config *v = &enc->vit;
        if (ssl_vit_preset(v, c->arch, img_size, c->patch_size, in_channels, err))
            return ssl_fail(err, SSL_EINVAL, "--arch '%s' unknown (vit_tiny, vit_small, vit_base)",
                            c->arch);
        if (ssl_vit_pos_from_name(c->pos_embed, &v->pos))
            return ssl_fail(err, SSL_EINVAL, "--pos-embed '%s' unknown (learned, sincos)", c->pos_embed);
        if (c->vit_depth) v->depth = c->vit_depth;
        v->drop_path = c->drop_path > 0 ? c->drop_path : 0.0f;
        if (c->patch_size < 1 || img_size % c->patch_size)
            return ssl_fail(err, SSL_EINVAL, "--patch-size %d does not divide the %d-pixel images",
                            c->patch_size, img_size);
        return SSL_OK;
    }
    *enc = ssl_encoder_config_resnet(ssl_resnet_depth_from_name(c->arch), c->width, in_channels,
                                     c->stem);
    if (!enc->resnet.depth)
        return ssl_fail(err, SSL_EINVAL,
                        "--arch '%s' unknown (resnet18, resnet34, resnet50, vit_tiny, vit_small, vit_base)",
                        c->arch);
    return SSL_OK;
}
