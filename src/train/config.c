/* Training configuration: defaults and JSON form (logs, checkpoints, --json). */
#include "selfsup/io.h"
#include "selfsup/train.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void ssl_train_config_default(ssl_train_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->method, sizeof c->method, "simclr");
    snprintf(c->data, sizeof c->data, "fashion-mnist");
    snprintf(c->arch, sizeof c->arch, "resnet18");
    c->width = 16;
    c->stem = SSL_STEM_SMALL;
    c->epochs = 2;
    c->batch_size = 256;
    snprintf(c->optimizer, sizeof c->optimizer, "lars");
    c->lr = 0.075f;        /* SimCLR (appendix B.1): 0.075 x sqrt(batch) with LARS */
    snprintf(c->lr_scale, sizeof c->lr_scale, "sqrt");
    c->weight_decay = 1e-6f;
    c->momentum = 0.9f;
    c->warmup_epochs = 0.5f;
    c->mcfg.temperature = 0.2f;
    c->mcfg.proj_hidden = 2048;
    c->mcfg.proj_dim = 128;
    c->threads = 0;
    c->workers = 1;
    c->seed = 1;
    snprintf(c->out, sizeof c->out, "runs/simclr");
    c->log_every = 20;
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
    fprintf(f, ",\"lr_scale\":");
    ssl_json_write_string(f, c->lr_scale);
    fprintf(f, ",\"lr\":%.9g,\"weight_decay\":%.9g,\"momentum\":%.9g,\"warmup_epochs\":%.9g"
               ",\"temperature\":%.9g,\"proj_hidden\":%d,\"proj_dim\":%d,\"threads\":%d"
               ",\"seed\":%" PRIu64 ",\"out\":",
            c->lr, c->weight_decay, c->momentum, c->warmup_epochs, c->mcfg.temperature,
            c->mcfg.proj_hidden, c->mcfg.proj_dim, c->threads, c->seed);
    ssl_json_write_string(f, c->out);
    fprintf(f, "}");
}

int ssl_train_encoder_config(const ssl_train_config *c, int in_channels,
                             ssl_resnet_config *enc, char *err)
{
    enc->depth = ssl_resnet_depth_from_name(c->arch);
    if (!enc->depth)
        return ssl_fail(err, SSL_EINVAL, "--arch '%s' unknown (resnet18, resnet34, resnet50)", c->arch);
    enc->width = c->width;
    enc->in_channels = in_channels;
    enc->stem = c->stem;
    return SSL_OK;
}
