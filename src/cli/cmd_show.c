/* selfsup show: PNG pictures of what a checkpoint's method sees and
 * predicts (src/eval/pictures.h). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "eval/pictures.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#define DEFAULT_IMAGES 8
#define MAX_FILES 256

static const char show_usage[] =
    "usage: selfsup show CKPT --out DIR [--images N] [--first I] [--split test|train]\n"
    "Writes PNG pictures of what the checkpoint's method sees and predicts into DIR\n"
    "(created if missing) and prints their paths:\n"
    "  rotation.png      each image in its 4 rotations, predicted vs true angle (frame green/red)\n"
    "  jigsaw.png        the tiles as the network sees them, predicted vs true permutation,\n"
    "                    the tiles put back in the predicted order\n"
    "  relloc.png        centre and neighbour patch, true and predicted position on the 3x3 grid\n"
    "  colorization.png  input lightness, predicted colour, original (RGB data)\n"
    "  inpainting.png    masked input, inpainted output, original\n"
    "  mae.png           original, masked, reconstruction, reconstruction + visible patches\n"
    "  views.png         other methods: the augmented views their training makes\n"
    "  attention.png     a ViT's [CLS] attention per head of its last block (DINO's maps)\n"
    "  pca.png           first 3 principal components of the patch / feature-map features as RGB\n"
    "  --images N        images to show (default 8, at most 64), spread evenly over the split\n"
    "                    from image I on (a fixed stride, so that classes vary)\n"
    "  --first I         the first image (default 0)\n"
    "  --split test|train  which split of the run's data (default test)\n"
    "  --data SPEC  --image-size N  --channels 1|3  --holdout F   another dataset of the same shape\n"
    "  --threads N  --device dnnl|cpu|ref  --precision fp32|bf16\n";

/* Rebuilds the run's method and networks and loads the weights (as cmd_eval.c). */
/* Images first, first + stride, ... (n of them) of ds as a dataset of their own. */
static int pick(const ssl_dataset *ds, int first, int n, ssl_dataset *sub, char *err)
{
    const int stride = (ds->n - first) / n > 0 ? (ds->n - first) / n : 1;
    const size_t img = (size_t)ds->c * ds->h * ds->w;
    *sub = *ds;
    sub->n = n;
    sub->images = malloc(img * n);
    sub->labels = ds->labels ? malloc(sizeof(int32_t) * n) : NULL;
    if (!sub->images || (ds->labels && !sub->labels)) {
        free(sub->images);
        free(sub->labels);
        memset(sub, 0, sizeof *sub);
        return ssl_fail(err, SSL_ENOMEM, "out of memory for %d images", n);
    }
    for (int i = 0; i < n; i++) {
        memcpy(sub->images + i * img, ds->images + (size_t)(first + i * stride) * img, img);
        if (ds->labels) sub->labels[i] = ds->labels[first + i * stride];
    }
    return SSL_OK;
}

/* The PNG files of a folder and their inodes: a file the pictures wrote
 * (atomically, by rename) is new or has a new inode. */
typedef struct png_list {
    int n;
    char name[MAX_FILES][256];
    ino_t ino[MAX_FILES];
} png_list;

static void list_pngs(const char *dir, png_list *l)
{
    l->n = 0;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) && l->n < MAX_FILES) {
        size_t len = strlen(e->d_name);
        if (len < 5 || len >= sizeof l->name[0] || strcmp(e->d_name + len - 4, ".png")) continue;
        char path[1024];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) || !S_ISREG(st.st_mode)) continue;
        snprintf(l->name[l->n], sizeof l->name[0], "%s", e->d_name);
        l->ino[l->n++] = st.st_ino;
    }
    closedir(d);
}

/* mkdir -p: dir and its missing parents. */
static int make_dirs(const char *dir)
{
    char p[1024];
    if ((size_t)snprintf(p, sizeof p, "%s", dir) >= sizeof p) return ENAMETOOLONG;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) && errno != EEXIST) return errno;
        *s = '/';
    }
    return mkdir(p, 0777) && errno != EEXIST ? errno : 0;
}

static int by_name(const void *a, const void *b) { return strcmp(a, b); }

/* Prints the files of after that are not in before with the same inode, sorted. */
static void print_written(const char *dir, const png_list *before, png_list *after)
{
    static char names[MAX_FILES][256];
    int k = 0;
    for (int i = 0; i < after->n; i++) {
        int same = 0;
        for (int j = 0; j < before->n && !same; j++)
            same = !strcmp(before->name[j], after->name[i]) && before->ino[j] == after->ino[i];
        if (!same) memcpy(names[k++], after->name[i], sizeof names[0]);
    }
    qsort(names, (size_t)k, sizeof names[0], by_name);
    for (int i = 0; i < k; i++) printf("wrote %s/%s\n", dir, names[i]);
}

int cmd_show(int argc, char **argv)
{
    cli_opts o;
    int rc = cli_parse("show", argc, argv, &o, show_usage);
    if (rc) return rc < 0 ? CLI_OK : rc;
    if (!o.train.out[0]) {
        cli_error("show", "--out DIR is required (the folder the pictures go to)");
        return CLI_USAGE;
    }
    int train = !strcmp(o.split, "train");
    if (!train && strcmp(o.split, "test")) {
        cli_error("show", "--split must be train or test");
        return CLI_USAGE;
    }
    const char *dir = o.train.out;
    int e = make_dirs(dir);
    if (e) {
        char msg[SSL_ERR_LEN];
        snprintf(msg, sizeof msg, "cannot create %.400s: %s", dir, strerror(e));
        cli_error("show", msg);
        return CLI_ERR;
    }
    ssl_ctx ctx;
    if ((rc = cli_ctx("show", &o, &ctx))) return rc;
    ssl_method m;
    memset(&m, 0, sizeof m);
    ssl_train_config cfg;
    ssl_train_state st;
    ssl_dataset ds, sub;
    memset(&ds, 0, sizeof ds);
    memset(&sub, 0, sizeof sub);
    char err[SSL_ERR_LEN];
    static png_list before, after;
    rc = cli_load_model("show", &o, &ctx, &m, &cfg, &st);
    if (!rc) rc = cli_load_split("show", &cfg, &m, train, o.train.threads, &ds, ctx.err);
    if (rc) goto done;
    if (o.first >= ds.n) {
        snprintf(err, sizeof err, "--first %d: the %s split has %d images", o.first, o.split, ds.n);
        goto fail;
    }
    int n = o.images ? o.images : DEFAULT_IMAGES;
    n = n < ds.n - o.first ? n : ds.n - o.first;
    if (pick(&ds, o.first, n, &sub, err)) goto fail;
    list_pngs(dir, &before);
    /* the subset's images are 0 .. n - 1: the task's random choices are the
     * held-out evaluation's for those indices */
    if (ssl_show_all(&m, &ctx, &sub, 0, n, cfg.seed, dir, err)) goto fail;
    list_pngs(dir, &after);
    print_written(dir, &before, &after);
    goto done;
fail:
    cli_error("show", err);
    rc = CLI_ERR;
done:
    ssl_method_free(&m);
    ssl_dataset_free(&ds);
    ssl_dataset_free(&sub);
    ssl_ctx_free(&ctx);
    return rc;
}
