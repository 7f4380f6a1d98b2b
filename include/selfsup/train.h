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
    float weight_decay_end;/* --weight-decay-end: cosine schedule of the weight decay to it (0: constant) */
    float clip_grad;       /* --clip-grad: per-parameter gradient-norm clip, DINO's (0: off) */
    float min_lr;          /* --min-lr: learning rate at the end of the cosine (not scaled) */
    float drop_path;       /* --drop-path: a ViT's stochastic depth rate (0: off; ViTs only) */
    float momentum;        /* --momentum */
    float warmup_epochs;   /* --warmup-epochs */
    char recipe[16];       /* --recipe: paper ("" too) or cifar (ops->optim_cifar, cifar_fields) */
    ssl_method_config mcfg;/* the method's hyperparameters (ssl_method_fields) */
    int threads;           /* --threads (0: all cores) */
    int workers;           /* --workers: loader threads */
    uint64_t seed;         /* --seed */
    char out[512];         /* --out: run folder (checkpoints, log.jsonl) */
    char resume[512];      /* --resume CKPT */
    char tokenizer[512];   /* --tokenizer FILE: BEiT's tokenizer from a file, not trained */
    int log_every;         /* --log-every: steps between progress lines */
    int quiet;             /* no progress lines */
    int64_t stop_after;    /* --stop-after: stop (with a checkpoint) after this global step; 0 = no */
    double time_budget;    /* --time-budget: seconds of pretraining; the schedule is shortened
                              to the steps that fit, measured on the first steps; 0 = none */
    float knn_every;       /* --knn-every: k-NN of the encoder every X epochs and at the end
                              (ssl_pretrain_knn; time to accuracy); a fraction of an epoch
                              is every round(X * steps per epoch) steps; 0 = off */
} ssl_train_config;

/* Defaults: SimCLR on Fashion-MNIST, ResNet-18 small stem, width 16, batch
 * 256, 2 epochs; the optimizer recipe (optimizer, lr, lr_scale, weight decay
 * and its end, momentum, warm-up, gradient clip), out (runs/<method>) and
 * the method's hyperparameters are left unset for ssl_train_config_resolve. */
void ssl_train_config_default(ssl_train_config *c);
/* Fills what is unset from the method's recipe (ops->optim_vit for a ViT
 * when the method has one, else ops->optim) and checks option ranges. */
int ssl_train_config_resolve(ssl_train_config *c, char *err);
/* The recipe of ops for c: ops->optim_cifar with --recipe cifar, else
 * ops->optim_vit when c->arch is a ViT and the method has one, else ops->optim. */
const ssl_method_optim *ssl_train_config_recipe(const ssl_train_config *c,
                                                const ssl_method_ops *ops);
/* The optimizer a resolved config trains with (ssl_pretrain's): --optimizer
 * lars (SimCLR's, eta 0.001), larc (solo-learn's clipped LARS, eta 0.02),
 * sgd or adamw (betas 0.9 and the recipe's beta2, default 0.999; eps 1e-8). */
int ssl_train_optim_config(const ssl_train_config *c, ssl_optim_config *o, char *err);
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
    double seconds;       /* wall time of this process's steps */
    double img_per_s;     /* this process's steps x batch / seconds */
    double run_seconds;   /* training time of the whole run: on a resume, the
                           * checkpoint's recorded time plus this process's */
    size_t peak_rss;
    double pretext_acc;   /* pretext tasks: accuracy over the last logged interval (else NaN) */
    char checkpoint[600]; /* path of the last checkpoint written */
} ssl_train_result;

/* Trains (or resumes) and writes <out>/last.safetensors and <out>/log.jsonl.
 * m is created inside; the caller frees it with ssl_method_free.
 * res->seconds leaves out the k-NN evaluations of ssl_pretrain_knn. */
int ssl_pretrain(const ssl_train_config *cfg, const ssl_dataset *train, ssl_ctx *ctx,
                 ssl_method *m, ssl_train_result *res);
/* ssl_pretrain that, with cfg->knn_every > 0, evaluates the encoder every
 * knn_every epochs (ssl_knn_interval steps) and at the run's last step: ssl_eval_encoder's
 * k-NN (k=20 and 200, T=0.1, eval mode) with the frozen features of all of
 * knn_train as the bank and all of knn_test as queries (both labelled, the
 * shape of train; as the encoder sees them, ssl_method_encoder_data). Each
 * writes {"event":"knn","epoch","step","train_seconds","knn_top1_k20",
 * "knn_top1_k200" (percent),"eff_rank","eval_seconds"} to log.jsonl and a
 * line to stderr. train_seconds is the pretraining clock without any
 * evaluation, continued from the checkpoint on a resume (time to accuracy).
 * knn_train, knn_test may be NULL when knn_every is 0. */
/* Steps between two k-NN evaluations of --knn-every X epochs of spe steps:
 * round(X * spe), at least 1; 0 when X is 0 (off). */
int64_t ssl_knn_interval(float knn_every, int spe);
int ssl_pretrain_knn(const ssl_train_config *cfg, const ssl_dataset *train,
                     const ssl_dataset *knn_train, const ssl_dataset *knn_test, ssl_ctx *ctx,
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
/* ssl_checkpoint_save that also records train_seconds (metadata
 * "train_seconds"): the run's pretraining wall time so far without its
 * evaluations, which a resumed run's clock continues from. */
int ssl_checkpoint_save_timed(const char *path, const ssl_train_config *cfg, const ssl_method *m,
                              const ssl_optim *opt, const ssl_train_state *st,
                              double train_seconds, char *err);
/* The train_seconds a checkpoint recorded, or -1 in *seconds when it has
 * none (saved by ssl_checkpoint_save, or before the clock was recorded). */
int ssl_checkpoint_train_seconds(const char *path, double *seconds, char *err);
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
/* One of m's saved states (ssl_method_add_state; prefix e.g. BEiT's
 * "tokenizer.") as a file of its own (format "selfsup-state": the method,
 * the prefix, the tensors under their checkpoint names), and back into a
 * method of the same kind and shapes. SSL_EINVAL when m has no such state. */
int ssl_checkpoint_save_state(const char *path, const ssl_method *m, const char *prefix, char *err);
int ssl_checkpoint_load_state(const char *path, ssl_method *m, const char *prefix, char *err);

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

/* ---- fine-tuning (src/train/finetune.c) ---- */
/* Encoder + linear head trained end to end on the labels, after MAE's
 * main_finetune.py: AdamW (0.9, 0.999), label-smoothed cross-entropy,
 * warm-up + cosine per step, layer-wise lr decay; no mixup, cutmix, drop
 * path or random erasing. The head reads ssl_encoder_forward's feature (a
 * ViT's class token, not MAE's mean pooling). */
typedef struct ssl_finetune_config {
    int epochs;            /* 10 (used when steps == 0) */
    int64_t steps;         /* total optimizer steps (0: epochs) */
    int batch_size;        /* 256, at most the labelled images */
    float lr;              /* base lr: peak = lr * batch / 256 (MAE's blr), 1e-3 */
    float layer_decay;     /* layer i's lr x decay^(L - i): ViT 0.75, ResNet 1 (off) */
    float weight_decay;    /* 0.05; none on no_decay params (biases, norms, tokens) */
    float warmup_epochs;   /* 1 */
    float label_smoothing; /* 0.1 */
    float crop_scale_min;  /* random resized crop scale (min, 1) + flip; 0.5 */
    int labels_per_class;  /* few labels: N images per class (0: all) */
    float label_fraction;  /* or this fraction of each class (0: all) */
    uint64_t seed;         /* loader order, augmentation and label subset */
    int workers, log_every, quiet;
    char out[512];         /* finetune.safetensors + finetune_log.jsonl; "": none */
    char source[512];      /* the encoder's origin (checkpoint, "scratch"), logged */
} ssl_finetune_config;

/* Defaults of the encoder's kind (the values above). */
void ssl_finetune_config_default(ssl_finetune_config *c, ssl_encoder_kind kind);
/* L and each parameter's layer id for layer decay (MAE's lr_decay.py):
 * ViT cls_token/pos_embed/patch_embed 0, blocks.i i+1, others (norm, head)
 * L = depth+1; ResNet conv1/bn1 0, layerK K, others (fc) L = 5. */
int ssl_finetune_num_layers(const ssl_encoder *e);
int ssl_finetune_layer_id(const ssl_encoder *e, const char *name);
/* A class-balanced labelled subset (per_class images of each class, or
 * round(fraction * n_c) >= 1), picked with seed, in ds's order; one of
 * per_class, fraction is > 0. Free out with ssl_dataset_free. */
int ssl_dataset_label_subset(ssl_dataset *out, const ssl_dataset *ds, int per_class,
                             float fraction, uint64_t seed, char *err);
/* The encoder of a pretraining checkpoint (initialised here; free with
 * ssl_encoder_free), and the run's config in cfg. */
int ssl_finetune_load_encoder(const char *path, ssl_encoder *enc, ssl_train_config *cfg,
                              char *err);

/* One fine-tuning network: the encoder (borrowed, trained in place), its
 * head ("head.*" as timm for a ViT, "fc.*" as torchvision for a ResNet)
 * and AdamW over both with per-parameter lr scales. */
typedef struct ssl_finetuner {
    ssl_ctx *ctx;
    ssl_encoder *enc;
    int n_classes;
    float label_smoothing;
    ssl_registry head;
    ssl_tensor head_w, head_b; /* (n_classes, feat_dim), (n_classes) */
    ssl_param *params;         /* (n_params): the encoder's, then the head's */
    double *lr_scales;         /* (n_params) layer_decay^(L - layer id) */
    int n_params;
    ssl_optim *opt;
    ssl_graph g;
    float *targets;            /* (cap, n_classes) smoothed one-hot targets */
    int cap;
} ssl_finetuner;

/* Head init drawn from ctx->rng: ViT N(0, 2e-5) weight, zero bias (MAE);
 * ResNet nn.Linear's default. */
int ssl_finetuner_init(ssl_finetuner *ft, ssl_ctx *ctx, ssl_encoder *enc, int n_classes,
                       const ssl_finetune_config *cfg);
/* One step: x (B, in_channels, h, w) normalized NCHW, labels (B) in
 * [0, n_classes); train-mode forward, loss, backward, AdamW at lr (param i
 * at lr * lr_scales[i]). loss, correct (may be NULL): the batch's mean loss
 * and top-1 hits before the step. */
int ssl_finetuner_step(ssl_finetuner *ft, float *x, const int32_t *labels, int B, int h, int w,
                       float lr, float *loss, int *correct);
/* Top-1 on a labelled split, eval mode, no augmentation. */
int ssl_finetuner_eval(ssl_finetuner *ft, const ssl_dataset *ds, int batch, double *top1);
/* Encoder + head tensors, atomically; format "selfsup-finetune" version 1. */
int ssl_finetuner_save(const ssl_finetuner *ft, const char *path, const ssl_finetune_config *cfg,
                       int epoch, int64_t step, double test_top1, char *err);
void ssl_finetuner_free(ssl_finetuner *ft);

typedef struct ssl_finetune_epoch {
    int epoch;                    /* 1-based */
    int64_t step;
    double train_loss, train_acc; /* means over the epoch's (augmented) batches */
    double test_top1;             /* after the epoch (NaN without a test split) */
    double lr, seconds;           /* last lr; time since the start */
} ssl_finetune_epoch;

typedef struct ssl_finetune_result {
    int n_epochs;
    ssl_finetune_epoch *epochs; /* (n_epochs); ssl_finetune_result_free */
    int n_train;                /* labelled images trained on */
    int64_t steps;
    double test_top1, best_top1, seconds, img_per_s;
    char checkpoint[600];       /* "" when cfg->out is "" */
} ssl_finetune_result;

/* Fine-tunes enc in place on train's labels (subset as cfg asks), testing
 * on test (NULL: none) after each epoch. */
int ssl_finetune(ssl_ctx *ctx, ssl_encoder *enc, const ssl_dataset *train,
                 const ssl_dataset *test, const ssl_finetune_config *cfg,
                 ssl_finetune_result *res);
void ssl_finetune_result_free(ssl_finetune_result *res);

/* Shared by the pretraining and fine-tuning loops: creates folder path and
 * its parents (existing ones are fine); "--out PATH: ..." on failure. */
int ssl_train_make_dir(const char *path, char *err);
/* s seconds as "1h02m" or "3m05s" into buf (n bytes); NaN, < 0 or huge: 0. */
void ssl_train_fmt_eta(char *buf, size_t n, double s);

#ifdef __cplusplus
}
#endif
#endif
