/* Backend registry: names to dispatch tables. */
#include "selfsup/ops.h"
#include "selfsup/ops_dnnl.h"

#include <string.h>

const ssl_backend *ssl_backend_default(void) { return ssl_backend_cpu(); }

int ssl_backend_by_name(const char *name, const ssl_backend **out, char *err)
{
    if (!strcmp(name, "cpu")) { *out = ssl_backend_cpu(); return SSL_OK; }
    if (!strcmp(name, "ref")) { *out = ssl_backend_ref(); return SSL_OK; }
    if (!strcmp(name, "dnnl")) {
        if (!ssl_dnnl_available())
            return ssl_fail(err, SSL_EDEVICE,
                            "--device dnnl: this build of selfsup has no oneDNN backend");
        *out = ssl_backend_dnnl();
        return SSL_OK;
    }
    if (!strcmp(name, "cuda"))
        return ssl_fail(err, SSL_EDEVICE,
                        "--device cuda: this build of selfsup has no CUDA backend");
    return ssl_fail(err, SSL_EINVAL,
                    "unknown device or backend '%s' (expected cpu, dnnl or ref)", name);
}
