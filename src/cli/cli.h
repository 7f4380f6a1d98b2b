/* selfsup command-line interface: shared helpers of the subcommands. */
#ifndef SELFSUP_CLI_H
#define SELFSUP_CLI_H

#include "selfsup/train.h"

/* Exit codes: 0 ok, 1 runtime error (bad file, NaN, ...), 2 usage error. */
enum { CLI_OK = 0, CLI_ERR = 1, CLI_USAGE = 2 };

/* Prints "selfsup <cmd>: <msg>" on one line to stderr. */
void cli_error(const char *cmd, const char *msg);

/* Options shared by the commands, parsed from argv. */
typedef struct cli_opts {
    ssl_train_config train;
    int json;           /* --json: results as one JSON object on the last line */
    int baselines;      /* --baselines: also raw pixels and the random-init encoder */
    int no_eval;        /* --no-eval */
    char protocol[16];  /* eval: knn, linear, all */
    char split[16];     /* embed: train, test */
    char prefix[512];   /* embed: output prefix */
    char device[16];    /* --device cpu|ref|cuda */
    char precision[8];  /* --precision fp32|bf16 ("": fp32) */
    int images, first;  /* show: --images N (0: the default), --first I */
    /* finetune: SSL_UNSET (decay, smoothing) or 0 when not given */
    float layer_decay, label_smoothing, label_fraction;
    int labels_per_class, from_scratch, epochs_set;
    int knn_every_set;  /* pretrain --resume: --knn-every given, overrides the run's */
    const char *positional;
    int data_set, arch_set; /* user overrode what a checkpoint says */
} cli_opts;

/* Returns CLI_OK, CLI_USAGE (message printed) or -1 when --help was printed. */
int cli_parse(const char *cmd, int argc, char **argv, cli_opts *o, const char *usage);

/* Apply --threads, --device and --precision to a context. */
int cli_ctx(const char *cmd, const cli_opts *o, ssl_ctx *ctx);

/* Evaluates enc (and with baselines first raw pixels and a random-init
 * encoder of the same architecture and seed), prints the table; rows gets up
 * to 3 rows. Returns SSL_OK or an error with ctx->err set. */
int cli_evaluate(ssl_ctx *ctx, ssl_encoder *enc, const char *label, const ssl_train_config *cfg,
                 const ssl_dataset *train, const ssl_dataset *test, int baselines, int which,
                 ssl_eval_row *rows, int *n_rows);
/* Writes "eval":{"raw":{...},"random_init":{...},"encoder":{...}} for the last n keys. */
void cli_json_eval(FILE *f, const ssl_eval_row *rows, int n);
/* --protocol as SSL_EVAL_* flags; 0 when unknown. */
int cli_protocols(const char *name);

/* Rebuilds a checkpoint's method and networks (o->positional; --data and
 * --arch options override what it says) and loads the weights; prints the
 * error. */
int cli_load_model(const char *cmd, const cli_opts *o, ssl_ctx *ctx, ssl_method *m,
                   ssl_train_config *cfg, ssl_train_state *st);
/* The train (1) or test (0) split of cfg->data, checked against the
 * encoder's channels; image folders decode on `threads` threads (0: all
 * cores); prints the error. */
int cli_load_split(const char *cmd, const ssl_train_config *cfg, const ssl_method *m, int train,
                   int threads, ssl_dataset *ds, char *err);

int cmd_pretrain(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_show(int argc, char **argv);

#endif
