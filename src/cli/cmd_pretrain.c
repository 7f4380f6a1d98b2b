/* selfsup pretrain: train an encoder without labels, then evaluate it. */
#include "cli.h"
#include "selfsup/io.h"

#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: selfsup pretrain [options]\n"
    "Pretrains an encoder without labels, saves <out>/last.safetensors, then evaluates\n"
    "it with k-NN (k=200 and k=20, T=0.1) and a linear probe on the labelled splits.\n"
    "With no options: SimCLR on Fashion-MNIST, ResNet-18 (small stem, width 16).\n"
    "Each method's paper recipe (optimizer, lr, weight decay, hyperparameters) is\n"
    "the default; any option below overrides it (list at the end).\n\n"
    "  --method NAME        simclr (default); see the list below\n"
    "  --data SPEC          fashion-mnist (default), mnist, or a folder of IDX files,\n"
    "                       CIFAR-10/100 binary batches or JPEG/PNG images (format\n"
    "                       detected); image folders: DIR/<class>/*.jpg (labels from\n"
    "                       the sorted class names), DIR/*.jpg (no labels: --no-eval),\n"
    "                       DIR/train/ + DIR/val/ (or test/) as the two splits\n"
    "  --image-size N       image folders: shorter side resized to N, center crop N x N\n"
    "                       (default 64; torchvision's Resize + CenterCrop, bilinear\n"
    "                       with antialiasing as PIL)\n"
    "  --channels 1|3       image folders: RGB (default) or gray (ITU-R 601-2 luma)\n"
    "  --skip-bad-images    image folders: skip undecodable files with a warning\n"
    "                       instead of stopping at the first\n"
    "  --holdout F          image folders without val/ or test/: a fraction F of each\n"
    "                       class (evenly spread over the sorted files) is the test\n"
    "                       split, the rest train\n"
    "  --arch NAME          resnet18 (default), resnet34, resnet50, vit_tiny, vit_small,\n"
    "                       vit_base (timm's ViTs; square images)\n"
    "  --width N            ResNet base width, 64 = torchvision's (default 16)\n"
    "  --stem small|imagenet  ResNet: 3x3/1 conv without max-pool (default) or 7x7/2 + pool\n"
    "  --patch-size N       ViT patch side, divides the image side (default 4)\n"
    "  --pos-embed learned|sincos  ViT position embeddings (default learned)\n"
    "  --vit-depth N        ViT blocks (default: the preset's 12)\n"
    "  --epochs N           epochs (default 2); --steps N overrides it\n"
    "  --batch-size N       images per step, each seen in 2 views (default 256)\n"
    "  --optimizer NAME     lars (SimCLR's), larc (solo-learn's clipped LARS), sgd,\n"
    "                       adamw (default: the method's)\n"
    "  --recipe NAME        paper: each method's paper recipe (default); cifar:\n"
    "                       solo-learn's CIFAR-10 one, for small images and short\n"
    "                       runs (ResNets; optimizer, lr, decay, heads, EMA: see the\n"
    "                       methods below); any option given still wins\n"
    "  --lr X               base learning rate, scaled by --lr-scale\n"
    "  --lr-scale RULE      sqrt: lr x sqrt(batch) (SimCLR's rule for short runs),\n"
    "                       linear: lr x batch/256, none: lr as given\n"
    "  --weight-decay X     --momentum X (SGD/LARS momentum)\n"
    "  --weight-decay-end X cosine schedule of the weight decay (params with decay)\n"
    "                       from --weight-decay to X over the run (DINO ViT default\n"
    "                       0.4; 0: constant)\n"
    "  --clip-grad X        per-parameter gradient-norm clipping at X, as DINO's\n"
    "                       (ViT default 3.0; 0: off)\n"
    "  --warmup-epochs X    linear warm-up, then cosine decay to --min-lr\n"
    "  --min-lr X           learning rate at the end of the cosine, not scaled\n"
    "                       (DINO default 1e-6, others 0)\n"
    "  --drop-path X        a ViT's stochastic depth: block i's residual branches\n"
    "                       are dropped per sample with probability X i/(depth-1)\n"
    "                       (DINO ViT default 0.1, others 0)\n"
    "  --threads N          compute threads (default: all cores)\n"
    "  --workers N          data-loading threads (default 1)\n"
    "  --seed N             (default 1)\n"
    "  --out DIR            run folder: last.safetensors, log.jsonl (default runs/METHOD)\n"
    "  --resume CKPT        continue the run saved in CKPT (its config is reused)\n"
    "  --tokenizer FILE     beit: the visual tokenizer from FILE (a tokenizer.safetensors\n"
    "                       an earlier run wrote) instead of training one\n"
    "  --stop-after N       stop at global step N with a checkpoint (for resuming)\n"
    "  --time-budget S      at most S seconds of pretraining: after 6 steps the\n"
    "                       schedule is shortened to the steps that fit (saved in the\n"
    "                       checkpoint, so a resume keeps it)\n"
    "  --log-every N        steps between progress lines (default 20)\n"
    "  --knn-every X        every X epochs (0.25: four times an epoch) and at the end,\n"
    "                       k-NN of the encoder as the final evaluation's (k=20 and\n"
    "                       200, whole train split as the bank, test split as\n"
    "                       queries) logged in log.jsonl as\n"
    "                       {\"event\":\"knn\",...,\"train_seconds\":T}, T the training\n"
    "                       time without any evaluation (time to accuracy); kept by\n"
    "                       the checkpoint for a resume (default 0: off)\n"
    "  --no-eval            skip the evaluation\n"
    "  --baselines          also evaluate raw pixels and the random-init encoder\n"
    "  --protocol knn|linear|all  which evaluation to run (default all)\n"
    "  --device NAME        op backend: dnnl (default when built with oneDNN), cpu\n"
    "                       (im2col + BLAS), ref (the plain C reference, slow)\n"
    "  --precision fp32|bf16  bf16: convolutions in bfloat16 mixed precision (inputs,\n"
    "                       weights and gradients rounded to bf16, sums, other ops,\n"
    "                       parameters and optimizer in fp32); needs the dnnl backend\n"
    "                       on a CPU with AVX512-BF16 or AMX (default fp32)\n"
    "  --json               print the results as one JSON object on the last line\n"
    "  --quiet              no progress lines\n";

/* The methods with their recipes, and the hyperparameter options. */
static void print_methods(void)
{
    printf("\nmethods (defaults):\n");
    for (const ssl_method_ops *const *m = ssl_method_list(); *m; m++) {
        printf("  %-10s %s\n             %s\n", (*m)->name, (*m)->summary, (*m)->defaults);
        const ssl_method_optim *c = &(*m)->optim_cifar;
        if (c->optimizer)
            printf("             --recipe cifar: %s lr %g x batch/256, wd %g, %g warm-up epochs; %s\n",
                   c->optimizer, (double)c->lr, (double)c->weight_decay, (double)c->warmup_epochs,
                   (*m)->cifar_fields);
    }
    printf("\nmethod hyperparameters (unset: the method's default):\n");
    for (int i = 0; i < ssl_method_n_fields; i++) {
        char opt[48];
        snprintf(opt, sizeof opt, "--%s %s", ssl_method_fields[i].name,
                 ssl_method_fields[i].is_int ? "N" : "X");
        printf("  %-32s %s\n", opt, ssl_method_fields[i].help);
    }
}

int cmd_pretrain(int argc, char **argv)
{
    cli_opts o;
    int rc = cli_parse("pretrain", argc, argv, &o, usage);
    if (rc < 0) print_methods();
    if (rc) return rc < 0 ? CLI_OK : rc;
    if (o.positional) {
        cli_error("pretrain", "takes no positional argument (see --help)");
        return CLI_USAGE;
    }
    int which = cli_protocols(o.protocol);
    if (!which) {
        cli_error("pretrain", "--protocol must be knn, linear or all");
        return CLI_USAGE;
    }
    ssl_train_config cfg = o.train;
    if (cfg.resume[0]) { /* the run's own config, with this call's out/steps/threads */
        int ch;
        ssl_train_config saved;
        char err[SSL_ERR_LEN];
        if (ssl_checkpoint_read_config(cfg.resume, &saved, &ch, NULL, err)) {
            cli_error("pretrain", err);
            return CLI_ERR;
        }
        snprintf(saved.resume, sizeof saved.resume, "%s", cfg.resume);
        snprintf(saved.tokenizer, sizeof saved.tokenizer, "%s", cfg.tokenizer); /* refused below */
        saved.threads = cfg.threads;
        saved.workers = cfg.workers;
        saved.quiet = cfg.quiet;
        saved.log_every = cfg.log_every;
        saved.stop_after = cfg.stop_after;
        if (o.knn_every_set) saved.knn_every = cfg.knn_every;
        cfg = saved;
    }
    if (!ssl_method_find(cfg.method)) {
        fprintf(stderr, "selfsup pretrain: --method '%s' unknown (available:", cfg.method);
        for (const ssl_method_ops *const *m = ssl_method_list(); *m; m++) fprintf(stderr, " %s", (*m)->name);
        fprintf(stderr, ")\n");
        return CLI_USAGE;
    }
    ssl_ctx ctx;
    if ((rc = cli_ctx("pretrain", &o, &ctx))) return rc;
    ssl_dataset train, test;
    memset(&test, 0, sizeof test);
    ssl_data_opts dopt; /* image folders decode on --threads threads */
    ssl_data_opts_default(&dopt);
    dopt.n_threads = cfg.threads;
    if (ssl_dataset_load_opts(&train, cfg.data, 1, &dopt, ctx.err)) {
        cli_error("pretrain", ctx.err);
        ssl_ctx_free(&ctx);
        return CLI_ERR;
    }
    /* Both splits before any work, so a bad test file (or a split without
     * labels) fails fast. --knn-every evaluates during training: it needs
     * them even with --no-eval. */
    const int need_test = !o.no_eval || cfg.knn_every > 0;
    if (need_test && (rc = ssl_dataset_load_opts(&test, cfg.data, 0, &dopt, ctx.err))) {
        if (rc == SSL_EINVAL) /* no test split: say how to go on without one */
            snprintf(ctx.err + strlen(ctx.err), SSL_ERR_LEN - strlen(ctx.err),
                     cfg.knn_every > 0 ? "; --knn-every needs it (0: off)" : "; --no-eval trains without evaluating");
        cli_error("pretrain", ctx.err);
        ssl_dataset_free(&train);
        ssl_ctx_free(&ctx);
        return CLI_ERR;
    }
    if (need_test && (!train.labels || !test.labels)) {
        snprintf(ctx.err, SSL_ERR_LEN, "%.400s has no labels (a flat image folder): the evaluation "
                 "needs class subfolders; %s", cfg.data,
                 cfg.knn_every > 0 ? "--knn-every needs them (0: off)" : "--no-eval trains without it");
        cli_error("pretrain", ctx.err);
        ssl_dataset_free(&train);
        ssl_dataset_free(&test);
        ssl_ctx_free(&ctx);
        return CLI_ERR;
    }
    ssl_method m;
    memset(&m, 0, sizeof m);
    ssl_train_result res;
    ssl_eval_row rows[3];
    int n_rows = 0;
    rc = ssl_pretrain_knn(&cfg, &train, &train, need_test ? &test : NULL, &ctx, &m, &res);
    if (rc) {
        cli_error("pretrain", ctx.err);
        rc = CLI_ERR;
        goto done;
    }
    if (!cfg.quiet) {
        char whole[64] = ""; /* a resume: the whole run's training time too */
        if (cfg.resume[0]) snprintf(whole, sizeof whole, " (whole run %.1f s)", res.run_seconds);
        fprintf(stderr, "[%s] done: step %lld, %.1f s%s, %.1f img/s, peak RSS %.0f MiB, checkpoint %s\n",
                cfg.method, (long long)res.steps, res.seconds, whole, res.img_per_s,
                res.peak_rss / 1048576.0, res.checkpoint);
    }
    if (!o.no_eval) {
        char label[64], arch[48];
        ssl_encoder_describe(&m.encoder, arch, sizeof arch);
        snprintf(label, sizeof label, "%.12s %.30s (%lld steps)", cfg.method, arch,
                 (long long)res.steps);
        if (cli_evaluate(&ctx, &m.encoder, label, &cfg, &train, &test, o.baselines, which, rows,
                         &n_rows))
            goto eval_fail;
    }
    if (o.json) {
        char enc_desc[48];
        ssl_encoder_describe(&m.encoder, enc_desc, sizeof enc_desc);
        printf("{\"method\":\"%s\",\"arch\":\"%s\",\"encoder\":", cfg.method, cfg.arch);
        ssl_json_write_string(stdout, enc_desc);
        /* width is a ResNet's; a ViT's shape is in "encoder" */
        if (m.encoder.cfg.kind == SSL_ENC_VIT) printf(",\"width\":null");
        else printf(",\"width\":%d", cfg.width);
        printf(",\"steps\":%lld,\"epochs\":%d,"
               "\"train_seconds\":%.2f,\"img_per_s\":%.2f,\"run_train_seconds\":%.2f,"
               "\"final_loss\":%.5f,\"peak_rss_mb\":%.1f,\"checkpoint\":",
               (long long)res.steps, res.epochs_done, res.seconds,
               res.img_per_s, res.run_seconds, res.final_loss, res.peak_rss / 1048576.0);
        ssl_json_write_string(stdout, res.checkpoint);
        if (n_rows) {
            printf(",");
            cli_json_eval(stdout, rows, n_rows);
        }
        printf("}\n");
    }
    rc = CLI_OK;
    goto done;
eval_fail:
    cli_error("pretrain", ctx.err);
    rc = CLI_ERR;
done:
    ssl_method_free(&m);
    ssl_dataset_free(&train);
    ssl_dataset_free(&test);
    ssl_ctx_free(&ctx);
    return rc;
}
