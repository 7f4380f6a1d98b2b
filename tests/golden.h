/* Golden files from PyTorch (tests/torch/gen_*.py) for the C tests. Include
 * after check.h. */
#ifndef SELFSUP_TEST_GOLDEN_H
#define SELFSUP_TEST_GOLDEN_H
#include <stdio.h>
#include <stdlib.h>

#include "selfsup/core.h"
#include "selfsup/io.h"

/* Loads $SSL_GOLDEN_DIR/<file> (default build/golden), running
 * tests/torch/<generator> once when it is missing; 0 (and a failed CHECK)
 * when it cannot be read. */
static inline int golden_load(ssl_st_file *f, const char *file, const char *generator)
{
    const char *dir = getenv("SSL_GOLDEN_DIR");
    if (!dir || !dir[0]) dir = "build/golden";
    char path[1024], cmd[1200], err[SSL_ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (ssl_st_load(f, path, err) == SSL_OK) return 1;
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/torch/%s '%s'", generator, dir);
    fprintf(stderr, "%s; running %s\n", err, cmd);
    int rc = system(cmd);
    CHECK(rc == 0, "generator failed (%d): %s", rc, cmd);
    if (ssl_st_load(f, path, err) != SSL_OK) {
        CHECK(0, "cannot read golden file: %s", err);
        return 0;
    }
    return 1;
}
#endif
