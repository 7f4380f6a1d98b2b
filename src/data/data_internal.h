/* Shared between the dataset loaders of src/data; not public API. */
#ifndef SELFSUP_DATA_INTERNAL_H
#define SELFSUP_DATA_INTERNAL_H

#include "selfsup/data.h"

/* True if path names an existing regular file. */
int ssl_data_file_exists(const char *path);

/* CIFAR binary batches in dir: CIFAR-10 (data_batch_1..5.bin / test_batch.bin,
 * cifar100 == 0) or CIFAR-100 (train.bin / test.bin, fine labels). */
int ssl_cifar_load(ssl_dataset *ds, const char *dir, int train, int cifar100, char *err);

#endif
