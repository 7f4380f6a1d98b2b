/* Self-supervised methods. A method is small: it names its networks (beyond
 * the shared encoder), its views and its loss. The training loop,
 * checkpoints, logging and evaluation are shared (train.h). */
#ifndef SELFSUP_METHOD_H
#define SELFSUP_METHOD_H

#include "selfsup/data.h"
#include "selfsup/encoder.h"
#include "selfsup/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Views a method may ask for per image (2 global + up to 10 local crops). */
#define SSL_MAX_VIEWS 12

/* Hyperparameters of all methods. A field left at SSL_UNSET (-1) gets the
 * method's default in validate(); every value a user can set is >= 0, so
 * the CLI rejects negatives. The table ssl_method_fields names them for the
 * CLI (--temperature), the config JSON and --help. */
#define SSL_UNSET (-1)
typedef struct ssl_method_config {
    float temperature;    /* softmax temperature (DINO: the student's) */
    int proj_hidden;      /* projector hidden width */
    int proj_dim;         /* projector output width */
    int pred_hidden;      /* predictor hidden width (BYOL, SimSiam) */
    float base_momentum;  /* teacher EMA momentum, at step 0 when it follows a cosine */
    float final_momentum; /* teacher EMA momentum at the last step (cosine from base_momentum) */
    int queue_size;       /* MoCo negatives; SwAV feature queue (0: none) */
    int bn_groups;        /* MoCo single-process shuffle-BN: BN sub-batches */
    int prototypes;       /* SwAV prototypes */
    float sinkhorn_eps;   /* SwAV */
    int sinkhorn_iters;   /* SwAV */
    float freeze_prototypes_epochs; /* SwAV: prototypes fixed this long */
    int out_dim;          /* DINO head output (prototypes) */
    int bottleneck_dim;   /* DINO head bottleneck */
    float teacher_temp;   /* DINO teacher temperature after warm-up */
    float warmup_teacher_temp;        /* DINO teacher temperature at step 0 */
    float warmup_teacher_temp_epochs; /* DINO: linear ramp length */
    float center_momentum;            /* DINO */
    float freeze_last_layer_epochs;   /* DINO: last layer fixed this long */
    float lambda;         /* Barlow Twins off-diagonal weight */
    float scale_loss;     /* Barlow Twins loss multiplier (solo-learn's scale_loss; 1 = the paper) */
    float sim_coeff, std_coeff, cov_coeff; /* VICReg weights */
    int global_crops;     /* views at full size (multi-crop) */
    int local_crops;      /* small views (multi-crop methods) */
    int local_size;       /* side of a local crop in pixels */
    float global_scale_min, local_scale_min, local_scale_max; /* crop area ranges */
    int head_hidden;      /* pretext classifier hidden width (0: a linear head) */
    int permutations;     /* jigsaw: size of the permutation set */
    int view_size;        /* pretext tasks: side of the square view (0: the image's shorter side) */
    int color_drop;       /* relloc on RGB: 1 keeps one random channel per patch */
    float dense_weight;   /* dense: weight of the patch-level term (1 - it: the image-level) */
    int color_regression; /* colorization: 1 = L2 on ab instead of the ab-bin classifier */
    float mask_size;      /* inpainting: side of a masked square, fraction of the view's */
    int mask_blocks;      /* inpainting: 0 one central square, N >= 1 random squares */
    float adv_weight;     /* inpainting: lambda_adv of the adversarial term (0: L2 only) */
    float mask_ratio;     /* MAE, SimMIM, BEiT: fraction of patches masked */
    int decoder_dim, decoder_depth, decoder_heads; /* MAE's decoder */
    int norm_pix_loss;    /* MAE: 1 = per-patch normalised pixel targets */
    int vocab_size;       /* BEiT: visual tokens (tokenizer codebook size) */
    int tokenizer_steps;  /* BEiT: training steps of its tokenizer before pretraining */
    int freeze_patch_embed; /* MoCo v3 on a ViT: 1 = fixed random patch projection */
    int head_bn;          /* DINO: 1 = BatchNorm after the head's hidden layers (DINOHead use_bn) */
} ssl_method_config;

/* Every field unset. */
void ssl_method_config_unset(ssl_method_config *c);
/* Rejects negative values other than SSL_UNSET (names the option). */
int ssl_method_config_check_ranges(const ssl_method_config *c, char *err);

/* One row of the hyperparameter table: option name without "--" (JSON key
 * with '-' -> '_'), field offset, int or float, help text. */
typedef struct ssl_method_field {
    const char *name;
    size_t offset;
    int is_int;
    const char *help;
} ssl_method_field;
extern const ssl_method_field ssl_method_fields[];
extern const int ssl_method_n_fields;
/* The field's value as a double (SSL_UNSET when unset). */
double ssl_method_field_get(const ssl_method_config *c, const ssl_method_field *f);
void ssl_method_field_set(ssl_method_config *c, const ssl_method_field *f, double v);

/* The optimizer recipe a method's paper uses, filled into the training
 * config where the user gave none. lr is scaled by lr_scale with the batch. */
typedef struct ssl_method_optim {
    const char *optimizer; /* lars, sgd, adamw */
    float lr;
    const char *lr_scale;  /* sqrt, linear, none */
    float weight_decay, momentum, warmup_epochs;
    float beta2;           /* AdamW's second-moment decay (0: PyTorch's 0.999) */
    float weight_decay_end; /* cosine schedule of the weight decay to this (0: constant) */
    float clip_grad;        /* per-parameter gradient-norm clip as DINO's (0: off) */
    float min_lr;           /* the cosine schedule's final learning rate (DINO 1e-6), not scaled */
    float drop_path;        /* a ViT student's stochastic depth (DINO 0.1; 0: off) */
} ssl_method_optim;

struct ssl_method;

typedef struct ssl_method_ops {
    const char *name;
    const char *summary;  /* one line for --help */
    const char *defaults; /* its defaults, one line for --help and README */
    ssl_method_optim optim;
    /* The recipe when the encoder is a ViT, whose papers train it differently
     * (DINO: AdamW instead of SGD); optimizer NULL: .optim for every arch. */
    ssl_method_optim optim_vit;
    /* --recipe cifar: solo-learn's CIFAR-10 config of the method
     * (scripts/pretrain/cifar/<method>.yaml), the short-run recipe for small
     * images: its optimizer (optimizer NULL: the method has none), and the
     * hyperparameters it sets, as "name=value" pairs of ssl_method_fields
     * names separated by spaces (a value the user gives wins). */
    ssl_method_optim optim_cifar;
    const char *cifar_fields;
    /* Checks cfg (clear error before any work) and fills the defaults it owns. */
    int (*validate)(ssl_method_config *cfg, char *err);
    /* The views of one image for images of c x h x w: fills augs, returns
     * their count (<= SSL_MAX_VIEWS). */
    int (*views)(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs);
    /* Optional: checks that need the batch size (a queue that must be a
     * multiple of it), before any work. */
    int (*check_batch)(const struct ssl_method *m, int batch, char *err);
    /* Builds the heads into m->heads and any teacher, queue or center
     * (registered with ssl_method_add_state); m->encoder is built already. */
    int (*init)(struct ssl_method *m, ssl_rng *rng, char *err);
    /* The loss of one batch. views[v]: (B, C, H_v, W_v) NCHW inputs. May
     * read m->step and m->total_steps. NULL on failure (g->ctx->err). */
    ssl_tensor *(*loss)(struct ssl_method *m, ssl_graph *g, ssl_tensor *const *views);
    /* Optional: after backward, before the optimizer (zero frozen grads). */
    void (*after_backward)(struct ssl_method *m);
    /* Optional: whether p (one of the encoder's or the heads' parameters)
     * is frozen at step m->step, i.e. its grad would be None in the
     * reference code, so that the optimizer skips it (no decay, no momentum,
     * no Adam step count). Asked through ssl_method_mark_frozen. */
    int (*frozen)(const struct ssl_method *m, const ssl_param *p);
    /* Optional: after the optimizer step (EMA teachers, queues, centers);
     * the graph of the step is still valid. m->step is the step just done. */
    void (*after_step)(struct ssl_method *m);
    void (*free)(struct ssl_method *m);
    /* Optional, pretext tasks (rotation, jigsaw, relloc): the predictions
     * of the last loss() call as counts (the training log and the held-out
     * evaluation sum them); returns the number of classes (chance level),
     * or 0 for a regression task (inpainting): correct stays 0, total
     * counts the values loss() averages over, and in a held-out evaluation
     * loss() returns the task's error alone, which is the metric. */
    int (*pretext_metrics)(const struct ssl_method *m, int64_t *correct, int64_t *total);
    /* Optional: the encoder's input channels for data of data_channels
     * (default: data_channels), or a negative error code with err set when
     * the method cannot train on such data (colorization: RGB in, the
     * encoder sees the lightness alone). */
    int (*encoder_channels)(const ssl_method_config *cfg, int data_channels, char *err);
    /* Optional, with encoder_channels: a split as the encoder sees it, for
     * frozen-feature evaluations and embeddings (colorization: each image's
     * lightness as one gray channel, 1- or 3-channel data). dst is a new
     * dataset (ssl_dataset_free). */
    int (*encoder_data)(const ssl_dataset *src, ssl_dataset *dst, char *err);
    /* Optional: statistics of the training split the method needs before
     * its first step (colorization: the colour prior of its class weights),
     * kept in m->extra. The loop calls it for a new run, not on a resume
     * (the checkpoint holds them). */
    int (*fit_data)(struct ssl_method *m, const ssl_dataset *train, char *err);
    /* 1: the loss reads a convolutional feature map (ssl_encoder_forward_dense),
     * so ssl_method_create rejects a ViT encoder. */
    int needs_feature_map;
    /* Optional (`selfsup show`): PNG pictures of what the method sees and
     * predicts for images first .. first + n - 1 of ds (the split as
     * stored), written into the existing folder out_dir; prints nothing.
     * Without it, show draws the augmented views (src/eval/pictures.h). */
    int (*show)(struct ssl_method *m, ssl_ctx *ctx, const ssl_dataset *ds, int first, int n,
                const char *out_dir, char *err);
} ssl_method_ops;

/* A registry saved with the checkpoint under a name prefix ("teacher.") but
 * not trained by the optimizer. */
typedef struct ssl_method_state {
    const char *prefix;
    ssl_registry *reg;
} ssl_method_state;

#define SSL_METHOD_MAX_STATE 6

typedef struct ssl_method {
    const ssl_method_ops *ops;
    ssl_method_config cfg;
    ssl_encoder encoder;  /* the network users keep (ResNet or ViT) */
    ssl_registry heads;   /* trained heads: projector, predictor, ... (prefixed names) */
    ssl_registry extra;   /* untrained persistent tensors: queue, center, ... */
    ssl_method_state state[SSL_METHOD_MAX_STATE]; /* saved, untrained; extra is state[0] */
    int n_state;
    int n_views;
    ssl_aug augs[SSL_MAX_VIEWS];
    int64_t step, total_steps; /* set by the loop before each loss */
    int steps_per_epoch;       /* set by the loop: epoch-based options -> steps */
    /* Set by the loop before each loss: geo[v][i] is where view v of the
     * batch's image i was cropped from (dense objectives match locations
     * across views with it); NULL when the caller has no geometry. */
    const ssl_crop_geo *const *geo;
    /* Held-out evaluation of a pretext task (ssl_eval_pretext) sets
     * pretext_eval = 1 and pretext_eval_first = the split index of the
     * batch's first image: the task's random choices then depend on the
     * image alone, not on step and batch position (0 in training). */
    int pretext_eval;
    int64_t pretext_eval_first;
    void *state_ptr;           /* method-specific */
} ssl_method;

/* Looks a method up by name ("simclr"); NULL if unknown. */
const ssl_method_ops *ssl_method_find(const char *name);
/* All methods, for --help and errors: NULL-terminated. */
const ssl_method_ops *const *ssl_method_list(void);

/* Builds encoder and heads; validates the config first. */
int ssl_method_create(ssl_method *m, const ssl_method_ops *ops, const ssl_method_config *cfg,
                      const ssl_encoder_config *enc, ssl_rng *rng, char *err);
/* Before training on images of h x w in batches of `batch`: the views
 * (m->n_views, m->augs) and the method's checks that need the batch size. */
int ssl_method_setup_run(ssl_method *m, int h, int w, int batch, char *err);
void ssl_method_free(ssl_method *m);
/* Saves reg with the checkpoint, names prefixed; not trained. */
int ssl_method_add_state(ssl_method *m, const char *prefix, ssl_registry *reg, char *err);
/* Epochs (a float option) in steps of this run, at least 0. */
int64_t ssl_method_epochs_to_steps(const ssl_method *m, float epochs);

/* The saved-state prefix of a visual tokenizer (BEiT's), which a new run
 * also writes as a file of its own (ssl_checkpoint_save_state). */
#define SSL_TOKENIZER_STATE "tokenizer."

/* Sets params[i].frozen for this step (m->step) from ops->frozen: params is
 * the optimizer's copy of the encoder's and the heads' parameters. Call it
 * after the backward, before the optimizer step. */
void ssl_method_mark_frozen(const ssl_method *m, ssl_param *params, int n);

/* ---- helpers methods share ---- */
/* dst params = src params (same structure), e.g. a teacher's start. */
void ssl_registry_copy_params(ssl_registry *dst, const ssl_registry *src);
/* dst params = m * dst + (1 - m) * src params (not buffers: as BYOL/DINO/MoCo). */
void ssl_registry_ema(ssl_registry *dst, const ssl_registry *src, float m);
/* Runs a network without recording it (no gradient), in train mode: the
 * pattern is  int r = ssl_graph_no_grad(g); ...; g->record = r;  */
int ssl_graph_no_grad(ssl_graph *g);

/* Multi-crop views: cfg->global_crops (default 2) SimCLR-strength crops of
 * h x w with area in [global_scale_min (if set), 1], then cfg->local_crops
 * crops of local_size^2 with area in [local_scale_min, local_scale_max].
 * Returns the number of views. */
int ssl_method_views_multicrop(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs);

/* BYOL's asymmetric pair of views (blur 1.0 / 0.1, solarize 0 / 0.2), which
 * Barlow Twins and VICReg use too, crop area [cfg->global_scale_min, 1].
 * Returns 2. */
int ssl_method_views_byol(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs);

/* Two-view methods: both views are "global" crops, their area range
 * [global_scale_min, 1]. Fills global_scale_min with the paper's value when
 * unset and checks it is in (0, 1] (for validate()). */
int ssl_method_check_pair_scale(ssl_method_config *c, float paper, char *err);
/* Fills base_momentum (unset: base) and final_momentum (unset: final, or
 * the base when final < 0: a constant momentum, MoCo's) and checks both
 * are in [0, 1]. The EMA after step k then uses
 * ssl_momentum_cosine_to(k, total_steps, base, final). */
int ssl_method_check_momentum(ssl_method_config *c, float base, float final, char *err);
/* Sets both views' smallest crop area to cfg->global_scale_min when it is
 * filled (> 0); returns 2. */
int ssl_method_views_pair_scale(const ssl_method_config *cfg, ssl_aug *augs);

/* The multi-crop options of a filled config: at least one global and one
 * local crop, at most SSL_MAX_VIEWS views, crop scales in (0, 1]. */
int ssl_method_check_multicrop(const ssl_method_config *c, const char *method, char *err);

/* Multi-crop encoding as the official code does it: each run of
 * consecutive views of one size is one encoder pass (its own BN statistics);
 * views[v] (B, C, H_v, W_v) -> features (n * B, feat_dim) in view order. */
ssl_tensor *ssl_method_encode_views(ssl_graph *g, ssl_encoder *enc, ssl_tensor *const *views, int n);

/* ds as the encoder of ops sees it: ds itself, or (ops->encoder_data) a
 * converted copy made in *tmp (free it with ssl_dataset_free; *tmp is
 * zeroed otherwise). NULL with err set on failure. */
const ssl_dataset *ssl_method_encoder_data(const ssl_method_ops *ops, const ssl_dataset *ds,
                                           ssl_dataset *tmp, char *err);

extern const ssl_method_ops ssl_method_simclr;
extern const ssl_method_ops ssl_method_moco;    /* MoCo v2 */
extern const ssl_method_ops ssl_method_byol;
extern const ssl_method_ops ssl_method_simsiam;
extern const ssl_method_ops ssl_method_swav;
extern const ssl_method_ops ssl_method_dino;
extern const ssl_method_ops ssl_method_barlow;  /* Barlow Twins */
extern const ssl_method_ops ssl_method_vicreg;
extern const ssl_method_ops ssl_method_rotation; /* RotNet (Gidaris 2018) */
extern const ssl_method_ops ssl_method_jigsaw;   /* Noroozi & Favaro 2016 */
extern const ssl_method_ops ssl_method_relloc;   /* relative patch location (Doersch 2015) */
extern const ssl_method_ops ssl_method_dense;    /* patch-level contrast (VADeR / PixContrast) */
extern const ssl_method_ops ssl_method_colorization; /* Zhang, Isola & Efros 2016 */
extern const ssl_method_ops ssl_method_inpainting;   /* context encoder (Pathak 2016) */
extern const ssl_method_ops ssl_method_mae;          /* masked autoencoder (He 2021), ViT */
extern const ssl_method_ops ssl_method_simmim;       /* SimMIM (Xie 2022), ViT */
extern const ssl_method_ops ssl_method_beit;         /* BEiT (Bao 2021) with its own VQ tokenizer, ViT */
extern const ssl_method_ops ssl_method_mocov3;       /* MoCo v3 (Chen, Xie & He 2021), ResNet or ViT */

#ifdef __cplusplus
}
#endif
#endif
