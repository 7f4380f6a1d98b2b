/* Learning-rate and momentum schedules, and the EMA update of teacher weights.
 * Schedules are pure functions of the step, so a resumed run needs only the
 * step count to continue exactly. */
#include "selfsup/optim.h"

#include <math.h>

#define PI 3.14159265358979323846
#define OMP_MIN 32768

float ssl_lr_warmup_cosine(int64_t step, int64_t warmup_steps, int64_t total_steps,
                           float base_lr, float final_lr)
{
    if (step < 0) step = 0;
    /* (step+1) so the first step already trains, as in SimCLR and solo-learn */
    if (step < warmup_steps)
        return (float)((double)base_lr * (double)(step + 1) / (double)warmup_steps);
    if (step >= total_steps) return final_lr;
    double progress = (double)(step - warmup_steps) / (double)(total_steps - warmup_steps);
    return (float)(final_lr + ((double)base_lr - final_lr) * 0.5 * (1.0 + cos(PI * progress)));
}

float ssl_lr_scale_linear(float base_lr, int64_t batch)
{
    return (float)((double)base_lr * (double)batch / 256.0);
}

float ssl_lr_scale_sqrt(float base_lr, int64_t batch)
{
    return (float)((double)base_lr * sqrt((double)(batch > 0 ? batch : 0)));
}

float ssl_momentum_cosine_to(int64_t step, int64_t total_steps, float base, float final)
{
    if (total_steps <= 0) return base;
    if (step < 0) step = 0;
    if (step > total_steps) step = total_steps;
    double c = cos(PI * (double)step / (double)total_steps);
    return (float)((double)final - ((double)final - (double)base) * (c + 1.0) * 0.5);
}

float ssl_momentum_cosine(int64_t step, int64_t total_steps, float base)
{
    return ssl_momentum_cosine_to(step, total_steps, base, 1.0f);
}

void ssl_ema_update(float *target, const float *online, int64_t n, float m)
{
    float a = 1.0f - m;
#pragma omp parallel for if (n >= OMP_MIN)
    for (int64_t i = 0; i < n; i++) target[i] = m * target[i] + a * online[i];
}
