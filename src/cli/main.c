/* selfsup: self-supervised visual representation learning from the command line. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: selfsup COMMAND [options]   (selfsup COMMAND --help for details)\n"
    "  pretrain   train an encoder without labels (default: SimCLR on Fashion-MNIST)\n"
    "  finetune   train a checkpoint's encoder (or a fresh one) and a linear head on the labels\n"
    "  eval       k-NN and linear-probe accuracy of a checkpoint's frozen encoder\n"
    "  embed      write frozen features and labels to .npy files\n"
    "  info       what a checkpoint holds\n"
    "  show       PNG pictures of what a checkpoint's method sees and predicts\n";

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "pretrain")) return cmd_pretrain(argc - 2, argv + 2);
    if (!strcmp(cmd, "finetune")) return cmd_finetune(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "embed")) return cmd_embed(argc - 2, argv + 2);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "show")) return cmd_show(argc - 2, argv + 2);
    fprintf(stderr, "selfsup: unknown command '%s' (pretrain, finetune, eval, embed, info, show)\n", cmd);
    return CLI_USAGE;
}
