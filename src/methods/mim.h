/* Masked image modeling on the ViT encoder: SimMIM (simmim.c), BEiT
 * (beit.c) and BEiT's discrete visual tokenizer, a small VQ-VAE
 * (vq_tokenizer.c). The functions below take the networks themselves
 * (ssl_vit, heads, the tokenizer), so tests and other methods can use them
 * without an ssl_method; the ssl_method_ops glue sits at the end of
 * simmim.c and beit.c.
 *
 * A token sequence is (N*T, D) row-major, sample n's patch t at row
 * n*T + t (vit.h); a mask is (N*T) bytes, 1 = masked, in the same order. */
#ifndef SELFSUP_METHODS_MIM_H
#define SELFSUP_METHODS_MIM_H

#include <stdio.h>

#include "selfsup/data.h"
#include "selfsup/method.h"
#include "selfsup/vit.h"

extern const ssl_method_ops ssl_method_simmim; /* also in method.h's list */
extern const ssl_method_ops ssl_method_beit;

/* ------------------------------------------------------------- shared */

/* timm's trunc_normal_(w, std=std, a=-std, b=std) as SimMIM's and BEiT's
 * code call it: N(0, std^2) cut at +-1 std (redrawn outside). */
void ssl_mim_trunc_normal(float *w, long n, float std, ssl_rng *rng);

/* Registers "mask_token" (1, 1, D) in r (weight decay on: neither SimMIM's
 * ViT nor BEiT exempt it), trunc-normal std 0.02 cut at +-0.02. */
int ssl_mim_mask_token_init(ssl_tensor *tok, ssl_registry *r, int D, ssl_rng *rng);

/* The encoder of SimMIM's VisionTransformerForSimMIM and BEiT's
 * VisionTransformerForMaskedImageModeling: patch embedding, masked patches
 * replaced by mask_token (x * (1 - w) + mask_token * w) BEFORE the position
 * embedding is added, class token, blocks, final norm; every token is
 * encoded. x (N, C, img, img) at the ViT's img_size; mask (N*T) ->
 * (N*(cls + T), D), cls = vit->cfg.class_token. Without a class token the
 * output is the blocks' (timm has no final norm then). */
ssl_tensor *ssl_mim_encode(ssl_graph *g, ssl_vit *vit, ssl_tensor *mask_token, ssl_tensor *x,
                           const uint8_t *mask);

/* The double a Python user holds for a ratio typed as a decimal (0.6f ->
 * 0.6, not 0.60000002), so mask counts match the official code's. */
double ssl_mim_as_typed(float f);

/* Token grids up to this many patches (mask generators use stack arrays). */
#define SSL_MIM_MAX_PATCHES 4096

/* The method's ViT (m->encoder.vit), or NULL with err set when the encoder
 * is not a ViT or has more than SSL_MIM_MAX_PATCHES patches. */
ssl_vit *ssl_mim_vit(ssl_method *m, const char *method, char *err);

/* Image b's random stream for masks: (seed, step, b) in training,
 * (seed, the image's index) in a held-out evaluation (m->pretext_eval). */
void ssl_mim_rng(const ssl_method *m, int64_t seed, int b, ssl_rng *r);

/* ------------------------------------------------------------- SimMIM */

/* SimMIM's MaskGenerator: the grid x grid tokens in square units of
 * scale x scale tokens (mask_patch_size / model_patch_size); ceil(units *
 * ratio) units chosen uniformly without replacement (a permutation's
 * prefix) and all their tokens masked. mask (grid*grid). SSL_EINVAL when
 * scale does not divide grid, ratio is outside [0, 1] or the grid has more
 * than SSL_MIM_MAX_PATCHES tokens. */
int ssl_simmim_mask(int grid, int scale, float ratio, ssl_rng *rng, uint8_t *mask);

/* SimMIM's one-layer prediction head, named as its official decoder
 * nn.Sequential(Conv2d(D, p*p*C, 1), PixelShuffle(p)): "decoder.0.weight"
 * (p*p*C, D, 1, 1) and "decoder.0.bias" (p*p*C), PyTorch's Conv2d default
 * init. The 1x1 convolution + pixel shuffle is a per-patch linear map whose
 * output is the patch's pixels in (c, ky, kx) order (SSL_PATCH_CHW). */
typedef struct ssl_simmim_head {
    int patch, in_chans, dim;
    ssl_tensor weight; /* (p*p*C, D, 1, 1), registered */
    ssl_tensor bias;   /* (p*p*C) */
    ssl_tensor w2d;    /* (p*p*C, D) view of weight: same data and gradient */
} ssl_simmim_head;

int ssl_simmim_head_init(ssl_simmim_head *h, ssl_registry *r, int dim, int patch, int in_chans,
                         ssl_rng *rng);

/* SimMIM's loss, the official formula: pred (N*T, C*p*p) per-patch
 * predictions in SSL_PATCH_CHW order, target the same size (the image's
 * patches, no gradient), mask (N*T) ->
 *   sum over masked patches of |target - pred| / (masked patches * p*p + 1e-5) / C
 * i.e. (|x - x_rec| * mask).sum() / (mask.sum() + 1e-5) / in_chans with
 * the pixel mask. The gradient at pred == target is 0 (torch's sign). */
ssl_tensor *ssl_simmim_l1(ssl_graph *g, ssl_tensor *pred, const float *target,
                          const uint8_t *mask, int in_chans);

/* The whole SimMIM objective of a batch: x (N, C, img, img), mask (N*T) ->
 * (1). The encoder sees every token (masked ones as mask_token); the head
 * predicts every patch; the loss counts the masked ones. */
ssl_tensor *ssl_simmim_loss(ssl_graph *g, ssl_vit *vit, ssl_tensor *mask_token,
                            ssl_simmim_head *h, ssl_tensor *x, const uint8_t *mask);

/* --------------------------------------------------------------- BEiT */

/* BEiT's MaskingGenerator (masking_generator.py): rectangles of
 * target area ~ U(min_patches, remaining budget) and log-uniform aspect
 * ratio in [min_aspect, max_aspect], side lengths rounded half-to-even as
 * Python's round(), placed uniformly (each side strictly smaller than the
 * grid's); a block is kept when it adds between 1 and the remaining budget
 * new patches; up to 10 attempts per block; stops when num_masking patches
 * are masked or a block finds no room (then fewer are masked). */
typedef struct ssl_beit_mask_config {
    int height, width;   /* the token grid */
    int num_masking;     /* patches to mask */
    int min_patches;     /* smallest target area of a block */
    int max_patches;     /* largest target area of a block */
    float min_aspect, max_aspect;
} ssl_beit_mask_config;

/* Our defaults for a grid x grid ViT: num_masking = round(ratio * T)
 * (Python's round, half to even), blocks of >= 2 patches, max =
 * num_masking, aspect in [0.3, 1/0.3]. BEiT masks 75 of 196 patches
 * (14 x 14) in blocks of >= 16, 8% of its grid, which would be 4 of our 49;
 * we take 2, the smallest block that is more than one patch, for more
 * varied block shapes on a small grid (both reach the budget on average:
 * 20.0 and 19.98 of 20 patches at 7 x 7). */
ssl_beit_mask_config ssl_beit_mask_config_default(int grid, float ratio);

/* One mask: mask (height*width) 0/1. blocks, when not NULL, receives up to
 * max_blocks kept rectangles as (top, left, h, w) rows and *n_blocks their
 * count. Returns the number of masked patches. */
int ssl_beit_mask(const ssl_beit_mask_config *c, ssl_rng *rng, uint8_t *mask, int *blocks,
                  int max_blocks, int *n_blocks);

/* BEiT's lm_head: nn.Linear(D, vocab), "lm_head.weight" trunc-normal std
 * 0.02 cut at +-0.02, "lm_head.bias" zero (BEiT's init). */
typedef struct ssl_beit_head {
    int dim, vocab;
    ssl_tensor weight, bias; /* (vocab, D), (vocab) */
} ssl_beit_head;

int ssl_beit_head_init(ssl_beit_head *h, ssl_registry *r, int dim, int vocab, ssl_rng *rng);

/* BEiT's objective: x (N, C, img, img), mask (N*T), tokens (N*T) the visual
 * tokens of the unmasked image in [0, vocab) -> (1): lm_head on the masked
 * positions alone (x[bool_masked_pos] order: sample-major), cross-entropy
 * with their tokens, mean over all masked positions of the batch. Fails
 * when nothing is masked. correct, when not NULL, receives how many masked
 * positions the head's argmax gets right. */
ssl_tensor *ssl_beit_loss(ssl_graph *g, ssl_vit *vit, ssl_tensor *mask_token, ssl_beit_head *h,
                          ssl_tensor *x, const uint8_t *mask, const int32_t *tokens,
                          int64_t *correct);

/* ------------------------------------------------------ VQ tokenizer */

/* A per-patch VQ-VAE (van den Oord et al. 2017) as BEiT's stand-in for
 * DALL-E's dVAE: each p x p x C patch (SSL_PATCH_CHW order) goes through an
 * MLP encoder Linear(P, hidden)-ReLU-Linear(hidden, code_dim) to z, is
 * quantized to its nearest codebook row e (Euclidean), and decoded by
 * Linear(code_dim, hidden)-ReLU-Linear(hidden, P) from the straight-through
 * z + sg(e - z). Loss = MSE(recon, patch) + MSE(e, sg z) + beta MSE(z, sg e)
 * (means over elements), codebook trained by gradient (no EMA). Names:
 * encoder.0.*, encoder.2.*, codebook.weight (codes, code_dim),
 * decoder.0.*, decoder.2.*; PyTorch's nn.Linear default init. */
typedef struct ssl_vq_config {
    int patch, in_chans;
    int hidden, code_dim, codes;
    float beta; /* commitment weight */
} ssl_vq_config;

/* hidden 128, code_dim 32, beta 0.25 (the paper's). On Fashion-MNIST
 * patches of 4 x 4 with 256 codes, 1000 steps of batch 64 reach a recon
 * MSE of ~0.04 on normalized pixels with every code in use (perplexity
 * ~95; most patches are background), ~14 ms a step on one core; hidden 256
 * gains 0.003 MSE for twice the time. */
ssl_vq_config ssl_vq_config_default(int patch, int in_chans, int codes);

typedef struct ssl_vq_tokenizer {
    ssl_vq_config cfg;
    ssl_mlp encoder, decoder;
    ssl_tensor codebook; /* (codes, code_dim) */
    ssl_registry reg;
} ssl_vq_tokenizer;

int ssl_vq_tokenizer_init(ssl_vq_tokenizer *t, const ssl_vq_config *cfg, ssl_rng *rng, char *err);
void ssl_vq_tokenizer_free(ssl_vq_tokenizer *t);

/* The training loss of images x (N, C, H, W), H and W multiples of the
 * patch -> (1). codes (N*T), when not NULL, receives each patch's code;
 * parts, when not NULL, (recon MSE, codebook term, commitment term
 * unweighted). */
ssl_tensor *ssl_vq_loss(ssl_graph *g, ssl_vq_tokenizer *t, ssl_tensor *x, int32_t *codes,
                        float parts[3]);

/* Visual tokens of x (N, C, H, W): codes (N*T), row-major patch grid per
 * image. Records nothing. SSL_OK or an error code (g->ctx->err). */
int ssl_vq_tokenize(ssl_graph *g, ssl_vq_tokenizer *t, ssl_tensor *x, int32_t *codes);

typedef struct ssl_vq_train_config {
    int steps;         /* Adam steps */
    int batch;         /* images per step */
    float lr;          /* constant learning rate */
    int restart_every; /* dead-code check period in steps (0: never) */
    int log_every;     /* a progress line every this many steps (0: none) */
    uint64_t seed;     /* image draws, augmentation, code restarts */
} ssl_vq_train_config;

/* steps 1000, batch 64, lr 1e-3, restart_every 100, log_every 250. */
ssl_vq_train_config ssl_vq_train_config_default(uint64_t seed);

typedef struct ssl_vq_stats {
    double loss, recon_mse, codebook, commit; /* means over the last window */
    double perplexity; /* exp(entropy) of the codes' use over the last window */
    int used;          /* codes used at least once over the last window */
    int restarted;     /* code re-initializations over the run */
    int window;        /* steps in that window */
} ssl_vq_stats;

/* Trains t on images of ds drawn uniformly (with replacement), each
 * through aug (which must produce (C, H, W) with H, W multiples of the
 * patch), with Adam (betas 0.9, 0.999, no weight decay). The codebook
 * starts as random encoder outputs of the first batch, and every
 * restart_every steps each code no patch chose since the last check is
 * re-initialized to a random encoder output of the current batch, its
 * Adam moments zeroed (the "dead code" restart of Jukebox / SoundStream);
 * restarts stop for the last 10% of the steps so the final statistics
 * describe the trained codebook. Progress lines go to log (NULL: none),
 * prefixed with tag. */
int ssl_vq_tokenizer_train(ssl_vq_tokenizer *t, const ssl_dataset *ds, const ssl_aug *aug,
                           const ssl_vq_train_config *tc, ssl_ctx *ctx, FILE *log,
                           const char *tag, ssl_vq_stats *stats, char *err);

/* A file of its own (safetensors, metadata format "selfsup-vq-tokenizer",
 * version 1, and the config) next to a model, e.g. <out>/tokenizer.safetensors. */
int ssl_vq_tokenizer_save(const ssl_vq_tokenizer *t, const char *path, char *err);
/* Builds t from such a file (t uninitialized). */
int ssl_vq_tokenizer_load(ssl_vq_tokenizer *t, const char *path, char *err);

/* BEiT's tokenizer inside a method built by ssl_method_beit (NULL for
 * another method): the lead saves it with ssl_vq_tokenizer_save. */
ssl_vq_tokenizer *ssl_beit_tokenizer(ssl_method *m);

#endif
