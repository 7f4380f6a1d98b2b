"""Golden values for tests/test_optim.c: three steps of torch.optim.SGD (plain
and Nesterov), torch.optim.AdamW, a LARS reference and solo-learn's clipped
LARS (LARC), on three params.

Usage: /usr/bin/python3 tests/torch/gen_optim.py OUTDIR   (writes OUTDIR/optim.safetensors)

Keys: init.<param>, grad.<k>.<param> (k = 0..2), <opt>.lr (3,) learning rate per
step, <opt>.hparams (7,) = [momentum, weight_decay, nesterov, eta, beta1, beta2,
eps], <opt>.step<k>.<param> (params after k = 1..3 steps) and
<opt>.state.<state name> (optimizer state after 3 steps, named as
ssl_optim_state names it). Every hyperparameter is a float32 value, so C
(float config) and Python (double) start from the same numbers.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import save  # noqa: E402

PARAMS = [("fc.weight", (8, 5), False), ("fc.bias", (8,), True),
          ("conv.weight", (4, 3, 3, 3), False)]
STEPS = 3


def f32(x):
    return float(np.float32(x))


def lars_step(params, vs, lr, mu, wd, eta, nesterov):
    """SimCLR's TF LARS (lars_optimizer.py, classic_momentum=True), the same
    formula as src/optim/optim.c: d = g + wd*p; trust = eta*|p|/|d| (1 if a
    norm is 0); v = mu*v + lr*trust*d; p -= nesterov ? mu*v + lr*trust*d : v.
    no_decay params: d = g and trust = 1. Norms in double, like the C code."""
    with torch.no_grad():
        for (p, no_decay), v in zip(params, vs):
            d = p.grad if no_decay else p.grad.add(p, alpha=wd)
            trust = 1.0
            if not no_decay:
                wn = float(p.double().norm())
                dn = float(d.double().norm())
                if wn > 0 and dn > 0:
                    trust = f32(eta * wn / dn)
            scaled = torch.tensor(f32(lr) * f32(trust), dtype=torch.float32)  # lr*trust in float
            v.mul_(mu).add_(d * scaled)
            p.sub_(v * mu + d * scaled if nesterov else v)


def larc_step(params, bufs, lr, mu, wd, eta, nesterov):
    """solo-learn's LARS (solo/utils/lars.py, from Lightning Bolts) with
    clip_lars_lr=True and exclude_bias_n_norm_lars=True, rewritten here: for a
    param with decay whose norm and gradient norm are > 0, a = eta*|p| /
    (|g| + wd*|p| + 1e-8), clipped to min(a / lr, 1), d = a * (g + wd*p);
    otherwise d = g. Then torch SGD momentum: buf = mu*buf + d (buf = d at
    first), p -= lr * (nesterov ? d + mu*buf : buf). Norms in float32 as the
    original's torch.norm."""
    with torch.no_grad():
        for (p, no_decay), buf in zip(params, bufs):
            d = p.grad
            pn, gn = torch.norm(p), torch.norm(p.grad)
            if not no_decay and pn != 0 and gn != 0:
                a = eta * pn / (gn + pn * wd + 1e-8)
                a = min(a / lr, 1)
                d = d.add(p, alpha=wd) * a
            buf.mul_(mu).add_(d)
            p.add_(d.add(buf, alpha=mu) if nesterov else buf, alpha=-lr)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    init = {n: torch.randn(s, generator=g) for n, s, _ in PARAMS}
    init["fc.bias"] *= 0.1
    # gradients of different scales per param, so trust ratios differ
    grads = [{n: torch.randn(s, generator=g) * (0.05 + 0.1 * i)
              for i, (n, s, _) in enumerate(PARAMS)} for _ in range(STEPS)]
    t = {"init." + n: v for n, v in init.items()}
    for k in range(STEPS):
        for n, v in grads[k].items():
            t["grad.%d.%s" % (k, n)] = v

    runs = {
        "sgd": dict(lr=[0.5, 0.25, 0.125], momentum=0.9, wd=5e-4, nesterov=0),
        "sgd_nesterov": dict(lr=[0.5, 0.25, 0.125], momentum=0.9, wd=5e-4, nesterov=1),
        "adamw": dict(lr=[0.01, 0.005, 0.0025], wd=0.05, beta1=0.9, beta2=0.999, eps=1e-8),
        "lars": dict(lr=[4.8, 2.4, 1.2], momentum=0.9, wd=1e-3, eta=0.001, nesterov=0),
        "lars_nesterov": dict(lr=[4.8, 2.4, 1.2], momentum=0.9, wd=1e-3, eta=0.001, nesterov=1),
        # fc.weight's a / lr crosses 1 over the three steps: clipped, then not
        "larc": dict(lr=[0.5, 0.25, 0.125], momentum=0.9, wd=1e-3, eta=0.02, nesterov=0),
        "larc_nesterov": dict(lr=[0.5, 0.25, 0.125], momentum=0.9, wd=1e-3, eta=0.02, nesterov=1),
    }
    for name, h in runs.items():
        h = {k: ([f32(x) for x in v] if isinstance(v, list) else f32(v)) for k, v in h.items()}
        ps = [torch.nn.Parameter(init[n].clone()) for n, _, _ in PARAMS]
        decay = [p for p, (_, _, nd) in zip(ps, PARAMS) if not nd]
        no_decay = [p for p, (_, _, nd) in zip(ps, PARAMS) if nd]
        if name.startswith("sgd"):
            opt = torch.optim.SGD([{"params": decay, "weight_decay": h["wd"]},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=h["lr"][0], momentum=h["momentum"],
                                  nesterov=bool(h["nesterov"]), foreach=False)
        elif name == "adamw":
            opt = torch.optim.AdamW([{"params": decay, "weight_decay": h["wd"]},
                                     {"params": no_decay, "weight_decay": 0.0}],
                                    lr=h["lr"][0], betas=(h["beta1"], h["beta2"]),
                                    eps=h["eps"], foreach=False)
        else:
            opt = None
            vs = [torch.zeros_like(p) for p in ps]
        for k in range(STEPS):
            for p, (n, _, _) in zip(ps, PARAMS):
                p.grad = grads[k][n].clone()
            if opt is None:
                step = larc_step if name.startswith("larc") else lars_step
                step([(p, nd) for p, (_, _, nd) in zip(ps, PARAMS)], vs, h["lr"][k],
                     h["momentum"], h["wd"], h["eta"], h["nesterov"])
            else:
                for group in opt.param_groups:
                    group["lr"] = h["lr"][k]
                opt.step()
            for p, (n, _, _) in zip(ps, PARAMS):
                t["%s.step%d.%s" % (name, k + 1, n)] = p.detach().clone()
        for i, (n, _, _) in enumerate(PARAMS):
            if opt is None:
                t["%s.state.optim.momentum.%s" % (name, n)] = vs[i]
            elif name == "adamw":
                st = opt.state[ps[i]]
                t["%s.state.optim.exp_avg.%s" % (name, n)] = st["exp_avg"]
                t["%s.state.optim.exp_avg_sq.%s" % (name, n)] = st["exp_avg_sq"]
            else:
                t["%s.state.optim.momentum.%s" % (name, n)] = opt.state[ps[i]]["momentum_buffer"]
        t[name + ".lr"] = torch.tensor(h["lr"], dtype=torch.float32)
        t[name + ".hparams"] = torch.tensor(
            [h.get("momentum", 0.0), h["wd"], h.get("nesterov", 0), h.get("eta", 0.0),
             h.get("beta1", 0.0), h.get("beta2", 0.0), h.get("eps", 0.0)], dtype=torch.float32)
    save(os.path.join(out, "optim.safetensors"), t, {"generator": "tests/torch/gen_optim.py",
                                                      "torch": torch.__version__})


if __name__ == "__main__":
    main()
