/* selfsup: self-supervised visual representation learning in C.
 * The umbrella header; each part can also be included on its own. */
#ifndef SELFSUP_H
#define SELFSUP_H

#include "selfsup/core.h"   /* context, errors, RNG, parameters      */
#include "selfsup/ops.h"    /* op dispatch table, layouts, GEMM       */
#include "selfsup/graph.h"  /* tensors, arena, autograd ops          */
#include "selfsup/nn.h"     /* ResNet, MLP heads, parameter registry */
#include "selfsup/optim.h"  /* SGD, LARS, AdamW, schedules, EMA      */
#include "selfsup/data.h"   /* datasets, augmentations, loader       */
#include "selfsup/eval.h"   /* k-NN, logistic regression, probe      */
#include "selfsup/io.h"     /* safetensors, .npy, JSON               */
#include "selfsup/method.h" /* self-supervised methods               */
#include "selfsup/train.h"  /* training loop, checkpoints, protocols */

#endif
