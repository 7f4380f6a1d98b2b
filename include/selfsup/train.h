/* The shared pretraining loop, checkpoints and evaluation protocols. */
#ifndef SELFSUP_TRAIN_H
#define SELFSUP_TRAIN_H

#include "selfsup/data.h"
#include "selfsup/io.h"
#include "selfsup/method.h"
#include "selfsup/optim.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ssl_train_config {
    char method[32];       /* --method: simclr */
    char data[512];        /* --data: fashion-mnist or a folder */
    char arch[32];         /* --arch: resnet18, resnet34, resnet50, vit_tiny, vit_small, vit_base */
    int width;             /* --width: ResNet base width (64 = torchvision) */
    ssl_stem stem;         /* --stem: ResNet small or imagenet */
    int patch_size;        /* --patch-size: ViT patch side (divides the image side) */
    char pos_embed[16];    /* --pos-embed: ViT learned or sincos */
    int vit_depth;         /* --vit-depth: ViT blocks (0: the preset's 12) */
    int epochs;            /* --epochs (used when steps == 0) */
    int64_t steps;         /* --steps: total optimizer steps, overrides epochs */
    int batch_size;        /* --batch-size: images per step (each gives n_views views) */
    char optimizer[16];    /* --optimizer: lars, sgd, adamw ("" = the method's) */
    float lr;              /* --lr: base learning rate, scaled by lr_scale */
    char lr_scale[8];      /* --lr-scale: sqrt (lr * sqrt(batch)), linear (lr * batch/256), none */
    float weight_decay;    /* --weight-decay */
    float momentum;        /* --momentum */
    float warmup_epochs;   /* --warmup-epochs */
    ssl_method_config mcfg;/* the method's hyperparameters (ssl_method_fields) */
    int threads;           /* --threads (0: all cores) */
    int workers;           /* --workers: loader threads */
    uint64_t seed;         /* --seed */
    char out[512];         /* --out: run folder (checkpoints, log.jsonl) */
    char resume[512];      /* --resume CKPT */
    int log_every;         /* --log-every: steps between progress lines */
    int quiet;             /* no progress lines */
    int64_t stop_after;    /* --stop-after: stop (with a checkpoint) after this global step; 0 = no */
    double time_budget;    /* --time-budget: seconds of pretraining; the schedule is shortened
                              to the steps that fit, measured on the first steps; 0 = none */
} ssl_train_config;

/* Defaults: SimCLR on Fashion-MNIST, ResNet-18 small stem, width 16, batch
 * 256, 2 epochs; the optimizer recipe (optimizer, lr, lr_scale, weight decay,
 * momentum, warm-up), out (runs/<method>) and the method's hyperparameters
 * are left unset for ssl_train_config_resolve. */
void ssl_train_config_default(ssl_train_config *c);
/* Fills what is unset from the method's recipe and checks option ranges. */
int ssl_train_config_resolve(ssl_train_config *c, char *err);
/* Writes the config as one JSON object (no newline). */
void ssl_train_config_json(const ssl_train_config *c, FILE *f);
/* The encoder config the training config asks for, for images of
 * in_channels x img_size x img_size (a ViT's position table is sized for
 * img_size; a ResNet ignores it). */
int ssl_train_encoder_config(const ssl_train_config *c, int in_channels, int img_size,
                             ssl_encoder_config *enc, char *err);

typedef struct ssl_train_result {
    int64_t steps;        /* global step reached */
    int epochs_done;
    double final_loss;    /* mean of the last logged interval */
    double seconds;       /* wall time of this run's steps */
    double img_per_s;
    size_t peak_rss;
    double pretext_acc;   /* pretext tasks: accuracy over the last logged interval (else NaN) */
    char checkpoint[600]; /* path of the last checkpoint written */
} ssl_train_result;

/* Trains (or resumes) and writes <out>/last.safetensors and <out>/log.jsonl.
 * m is created inside; the caller frees it with ssl_method_free. */
int ssl_pretrain(const ssl_train_config *cfg, const ssl_dataset *train, ssl_ctx *ctx,
                 ssl_method *m, ssl_train_result *res);

/* ---- checkpoints (safetensors; format "selfsup-checkpoint" version 1) ---- */
/* Encoder tensors use torchvision names; heads are prefixed ("projector.");
 * optimizer state is "optim.*"; metadata holds step, epoch, RNG, config. */
typedef struct ssl_train_state {
    int64_t step;
    int epoch, step_in_epoch;
    uint64_t seed;
} ssl_train_state;

int ssl_checkpoint_save(const char *path, const ssl_train_config *cfg, const ssl_method *m,
                        const ssl_optim *opt, const ssl_train_state *st, char *err);
/* Reads the run's config (metadata "config") so that a resume or an eval
 * rebuilds the same networks; in_channels and img_size (a ViT's; 0 for a
 * ResNet; img_size may be NULL) from the metadata. */
int ssl_checkpoint_read_config(const char *path, ssl_train_config *cfg, int *in_channels,
                               int *img_size, char *err);
/* Loads tensors into m (and opt, st when not NULL). Every tensor the networks
 * need must be present with the same shape; architecture mismatch is an error. */
int ssl_checkpoint_load(const char *path, ssl_method *m, ssl_optim *opt, ssl_train_state *st,
                        char *err);
/* The tensors of m (encoder, heads, saved state with their prefixes) from an
 * open safetensors file; path is for messages. */
int ssl_checkpoint_load_tensors(const ssl_st_file *f, const char *path, ssl_method *m, char *err);

/* ---- evaluation ---- */
/* Frozen features of a whole split: encoder in eval mode (running BN stats),
 * out (ds->n, feat_dim). */
int ssl_extract_features(ssl_ctx *ctx, ssl_encoder *enc, const ssl_dataset *ds, int batch,
                         float *out);

enum { SSL_EVAL_KNN = 1, SSL_EVAL_LINEAR = 2 };

typedef struct ssl_eval_row {
    char name[64];
    int protocols; /* in: SSL_EVAL_KNN | SSL_EVAL_LINEAR; 0 means both. Skipped ones are NaN */
    double knn200, knn20, linear;
    double linear_lambda;
    double std_norm, eff_rank; /* collapse measures of the test features (NaN: not computed) */
    /* Pretext tasks (ssl_eval_pretext): the task's accuracy and mean loss on
     * the split, classes = its chance level's inverse (NaN, 0: not computed).
     * A regression task (inpainting) has classes 0, accuracy NaN, and its
     * error as the loss. */
    double pretext_acc, pretext_loss;
    int pretext_classes;
    int dim;
    double seconds;
} ssl_eval_row;

/* k-NN (k=200 and k=20, T=0.1) and the linear probe on (train, test) features. */
int ssl_eval_features(const float *train, const int32_t *ytrain, int ntrain, const float *test,
                      const int32_t *ytest, int ntest, int d, int n_classes, uint64_t seed,
                      ssl_eval_row *row, char *err);
/* The same on an encoder's features of two splits. */
int ssl_eval_encoder(ssl_ctx *ctx, ssl_encoder *enc, const ssl_dataset *train,
                     const ssl_dataset *test, uint64_t seed, ssl_eval_row *row);
/* A pretext method's own task on a held-out split (ops->pretext_metrics
 * set): every image once, through the eval-mode view of the method's size
 * (whole image, resized if --view-size asks), encoder and head in eval mode
 * (running BN statistics), no gradient; the task's random choices (which
 * permutation, which neighbour, jitter) depend on the run's seed and the
 * image's index alone, so the figure is the same for any batch size and
 * for `pretrain` and `eval`. Fills row->pretext_*. m->step is unchanged. */
int ssl_eval_pretext(ssl_ctx *ctx, ssl_method *m, const ssl_dataset *ds, int batch,
                     ssl_eval_row *row);
/* Raw pixels (normalized as the encoder's input) as features. */
int ssl_eval_raw(const ssl_dataset *train, const ssl_dataset *test, uint64_t seed,
                 ssl_eval_row *row, char *err);
void ssl_eval_print_table(FILE *f, const ssl_eval_row *rows, int n);

#ifdef __cplusplus
}
#endif
#endif
