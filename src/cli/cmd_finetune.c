/* selfsup finetune: a pretrained encoder (or a fresh one, --from-scratch)
 * and a linear head trained end to end on the labels; test top-1 per epoch. */
#include "cli.h"
#include "selfsup/io.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: selfsup finetune CKPT [options]\n"
    "       selfsup finetune --from-scratch --arch NAME [options]\n"
    "Trains the encoder of a pretraining checkpoint end to end with a linear head on\n"
    "the labels of its data (or --data), testing top-1 on the test split after each\n"
    "epoch; --from-scratch trains the same network from random weights with the same\n"
    "recipe (the baseline a pretraining must beat). The recipe is MAE's fine-tuning\n"
    "(main_finetune.py) without mixup, cutmix, drop path or random erasing: AdamW\n"
    "(0.9, 0.999), label smoothing, linear warm-up then cosine decay per step,\n"
    "layer-wise lr decay (layer i of L gets lr x decay^(L-i): a ViT's blocks, a\n"
    "ResNet's stages), random resized crop + flip. The head reads the class token\n"
    "of a ViT (MAE's fine-tuning pools the patch tokens) or a ResNet's pooled features.\n"
    "Writes <out>/finetune.safetensors (encoder + head: timm's head.* / torchvision's\n"
    "fc.*) and <out>/finetune_log.jsonl (one line per epoch).\n\n"
    "  --epochs N             epochs (default 10); --steps N overrides it\n"
    "  --batch-size N         images per step (default 256, at most the labelled images)\n"
    "  --lr X                 base lr; the peak is X * batch / 256 (MAE's blr; default 1e-3)\n"
    "  --layer-decay X        in (0, 1] (default: ViT 0.75 as MAE, ResNet 1 = off)\n"
    "  --weight-decay X       AdamW weight decay, not on biases, norms, tokens (default 0.05)\n"
    "  --warmup-epochs X      linear warm-up (default 1)\n"
    "  --label-smoothing X    in [0, 1) (default 0.1, MAE's)\n"
    "  --labels-per-class N   few-label training: N labelled images of each class,\n"
    "                         picked with --seed\n"
    "  --label-fraction F     or a fraction F of each class\n"
    "  --data SPEC            another labelled dataset of the encoder's image shape\n"
    "                         (default: the checkpoint's; fashion-mnist with --from-scratch)\n"
    "  --image-size N  --channels 1|3  --skip-bad-images  --holdout F\n"
    "                         image folder options, with --data (see 'selfsup pretrain --help')\n"
    "  --from-scratch         random init; the network from --arch, --width, --stem,\n"
    "                         --patch-size, --pos-embed, --vit-depth (as pretrain's)\n"
    "  --out DIR              run folder (default runs/finetune)\n"
    "  --threads N  --workers N  --seed N  --log-every N  --device dnnl|cpu|ref\n"
    "  --precision fp32|bf16  bf16 convolutions (see 'selfsup pretrain --help')\n"
    "  --json                 the results as one JSON object on the last line\n"
    "  --quiet                no progress lines\n";

static int usage_error(const char *msg)
{
    fprintf(stderr, "selfsup finetune: %s (see 'selfsup finetune --help')\n", msg);
    return CLI_USAGE;
}

/* The split as the encoder sees it (colorization's encoder: the lightness). */
static int load_split(const char *spec, int train, int threads, const ssl_method_ops *ops,
                      ssl_dataset *raw, ssl_dataset *conv, const ssl_dataset **out, char *err)
{
    ssl_data_opts dopt;
    ssl_data_opts_default(&dopt);
    dopt.n_threads = threads;
    int rc = ssl_dataset_load_opts(raw, spec, train, &dopt, err);
    if (rc) return rc;
    *out = ssl_method_encoder_data(ops, raw, conv, err);
    return *out ? SSL_OK : SSL_EINVAL;
}

static void json_pct(const char *key, double v)
{
    if (isnan(v)) printf(",\"%s\":null", key);
    else printf(",\"%s\":%.2f", key, 100 * v);
}

int cmd_finetune(int argc, char **argv)
{
    cli_opts o;
    int rc = cli_parse("finetune", argc, argv, &o, usage);
    if (rc) return rc < 0 ? CLI_OK : rc;
    if (!o.positional == !o.from_scratch)
        return usage_error(o.positional ? "give a checkpoint or --from-scratch, not both"
                                        : "needs a checkpoint path, or --from-scratch --arch NAME");
    if (o.positional && o.arch_set)
        return usage_error("--arch, --width, --stem, --patch-size, --pos-embed and --vit-depth "
                           "go with --from-scratch (a checkpoint holds its architecture)");
    if (o.layer_decay != SSL_UNSET && !(o.layer_decay > 0 && o.layer_decay <= 1))
        return usage_error("--layer-decay must be in (0, 1]");
    if (o.label_smoothing != SSL_UNSET && !(o.label_smoothing >= 0 && o.label_smoothing < 1))
        return usage_error("--label-smoothing must be in [0, 1)");
    if (!(o.label_fraction >= 0 && o.label_fraction <= 1))
        return usage_error("--label-fraction must be in (0, 1]");
    if (o.label_fraction > 0 && o.labels_per_class > 0)
        return usage_error("give --labels-per-class or --label-fraction, not both");
    if (o.train.epochs < 1 && o.train.steps < 1) return usage_error("--epochs or --steps must be >= 1");

    ssl_ctx ctx;
    if ((rc = cli_ctx("finetune", &o, &ctx))) return rc;
    ssl_train_config src = o.train; /* the encoder's run (a checkpoint's own) */
    ssl_encoder enc;
    memset(&enc, 0, sizeof enc);
    ssl_dataset raw_train, raw_test, conv_train, conv_test;
    memset(&raw_train, 0, sizeof raw_train);
    memset(&raw_test, 0, sizeof raw_test);
    memset(&conv_train, 0, sizeof conv_train);
    memset(&conv_test, 0, sizeof conv_test);
    const ssl_dataset *train = NULL, *test = NULL;
    ssl_finetune_result res;
    memset(&res, 0, sizeof res);
    const ssl_method_ops *ops = NULL;
    if (o.positional) {
        if ((rc = ssl_finetune_load_encoder(o.positional, &enc, &src, ctx.err))) goto fail;
        if (o.data_set) snprintf(src.data, sizeof src.data, "%s", o.train.data);
        ops = ssl_method_find(src.method);
    }
    if ((rc = load_split(src.data, 1, o.train.threads, ops, &raw_train, &conv_train, &train, ctx.err)) ||
        (rc = load_split(src.data, 0, o.train.threads, ops, &raw_test, &conv_test, &test, ctx.err))) {
        if (rc == SSL_EINVAL && !raw_test.images && raw_train.images)
            snprintf(ctx.err + strlen(ctx.err), SSL_ERR_LEN - strlen(ctx.err),
                     " (fine-tuning tests on the test split after each epoch)");
        goto fail;
    }
    if (o.from_scratch) {
        ssl_encoder_config ec;
        if (!strncmp(src.arch, "vit", 3) && train->h != train->w) {
            snprintf(ctx.err, SSL_ERR_LEN, "a ViT needs square images (the data is %dx%d)", train->h, train->w);
            goto fail;
        }
        if ((rc = ssl_train_encoder_config(&src, train->c, train->h, &ec, ctx.err)) ||
            (rc = ssl_encoder_init(&enc, &ec, &ctx.rng, ctx.err)))
            goto fail;
    }

    ssl_finetune_config fc;
    ssl_finetune_config_default(&fc, enc.cfg.kind);
    if (o.epochs_set) fc.epochs = o.train.epochs;
    fc.steps = o.train.steps;
    fc.batch_size = o.train.batch_size;
    if (o.train.lr != SSL_UNSET) fc.lr = o.train.lr;
    if (o.train.weight_decay != SSL_UNSET) fc.weight_decay = o.train.weight_decay;
    if (o.train.warmup_epochs != SSL_UNSET) fc.warmup_epochs = o.train.warmup_epochs;
    if (o.layer_decay != SSL_UNSET) fc.layer_decay = o.layer_decay;
    if (o.label_smoothing != SSL_UNSET) fc.label_smoothing = o.label_smoothing;
    fc.labels_per_class = o.labels_per_class;
    fc.label_fraction = o.label_fraction;
    fc.seed = o.train.seed;
    fc.workers = o.train.workers;
    fc.log_every = o.train.log_every;
    fc.quiet = o.train.quiet;
    snprintf(fc.out, sizeof fc.out, "%s", o.train.out[0] ? o.train.out : "runs/finetune");
    snprintf(fc.source, sizeof fc.source, "%s", o.positional ? o.positional : "scratch");
    if ((rc = ssl_finetune(&ctx, &enc, train, test, &fc, &res))) goto fail;

    char arch[48], label[96];
    ssl_encoder_describe(&enc, arch, sizeof arch);
    snprintf(label, sizeof label, "%s %s", o.positional ? src.method : "from scratch", arch);
    printf("\nFine-tuning %s on %s: %d labelled training images", label, src.data, res.n_train);
    if (fc.labels_per_class) printf(" (%d per class)", fc.labels_per_class);
    else if (fc.label_fraction > 0) printf(" (%g of each class)", (double)fc.label_fraction);
    printf(", test split %d images\n", test->n);
    printf("  epoch     step  train loss  train acc  test top-1\n");
    int best = 0;
    for (int i = 0; i < res.n_epochs; i++) {
        const ssl_finetune_epoch *e = &res.epochs[i];
        printf("  %5d %8lld  %10.4f  %8.2f%%  %9.2f%%\n", e->epoch, (long long)e->step, e->train_loss,
               100 * e->train_acc, 100 * e->test_top1);
        if (e->test_top1 > res.epochs[best].test_top1) best = i;
    }
    if (res.n_epochs)
        printf("Test top-1 %.2f%% after %d epochs (best %.2f%% after epoch %d); %.1f s, %.1f img/s; %s\n",
               100 * res.test_top1, res.n_epochs, 100 * res.best_top1, res.epochs[best].epoch,
               res.seconds, res.img_per_s, res.checkpoint);
    if (o.json) {
        printf("{\"source\":");
        ssl_json_write_string(stdout, fc.source);
        printf(",\"method\":");
        ssl_json_write_string(stdout, o.positional ? src.method : "scratch");
        printf(",\"arch\":\"%s\",\"data\":", src.arch);
        ssl_json_write_string(stdout, src.data);
        printf(",\"labelled_images\":%d,\"labels_per_class\":%d,\"label_fraction\":%g,\"steps\":%lld,"
               "\"batch_size\":%d,\"lr\":%g,\"layer_decay\":%g,\"weight_decay\":%g,\"label_smoothing\":%g",
               res.n_train, fc.labels_per_class, (double)fc.label_fraction, (long long)res.steps,
               fc.batch_size, (double)fc.lr, (double)fc.layer_decay, (double)fc.weight_decay,
               (double)fc.label_smoothing);
        json_pct("test_top1", res.test_top1);
        json_pct("best_test_top1", res.best_top1);
        printf(",\"train_seconds\":%.2f,\"img_per_s\":%.2f,\"checkpoint\":", res.seconds, res.img_per_s);
        ssl_json_write_string(stdout, res.checkpoint);
        printf(",\"epochs\":[");
        for (int i = 0; i < res.n_epochs; i++) {
            const ssl_finetune_epoch *e = &res.epochs[i];
            printf("%s{\"epoch\":%d,\"step\":%lld,\"train_loss\":%.5f", i ? "," : "", e->epoch,
                   (long long)e->step, e->train_loss);
            json_pct("train_acc", e->train_acc);
            json_pct("test_top1", e->test_top1);
            printf("}");
        }
        printf("]}\n");
    }
    rc = CLI_OK;
    goto done;
fail:
    cli_error("finetune", ctx.err);
    rc = CLI_ERR;
done:
    ssl_finetune_result_free(&res);
    ssl_encoder_free(&enc);
    ssl_dataset_free(&conv_train);
    ssl_dataset_free(&conv_test);
    ssl_dataset_free(&raw_train);
    ssl_dataset_free(&raw_test);
    ssl_ctx_free(&ctx);
    return rc;
}
