"""Golden for tests/test_methods.c: three SwAV steps (Caron et al. 2020) as
facebookresearch/swav main_swav.py trains, on selfsup's tiny encoder with
multi-crop (2 global 12x12 + 2 local 6x6 views). See method_golden.py for
the format.

Covers: prototypes normalized at the start of each step; backbone BN per
resolution, projector BN over all crops; Sinkhorn-Knopp codes of the global
crops; swapped prediction over every other view; prototypes frozen in step 0
only (freeze 0.5 epoch at 2 steps per epoch); the feature queue (16 = 2
batches): filled in steps 0 and 1, joining the Sinkhorn batch in step 2.

Usage: /usr/bin/python3 tests/torch/gen_method_swav.py OUTDIR
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from method_golden import FEAT, Golden, encoder, f64, mlp, prepare, views  # noqa: E402

T, EPS, ITERS = 0.1, 0.05, 3
HIDDEN, DIM, K, B, STEPS = 24, 16, 20, 8, 3
SIZES = [12, 12, 6, 6]              # nmb_crops [2, 2]
CROPS_FOR_ASSIGN = [0, 1]
QUEUE = 16
SPE, FREEZE_EPOCHS = 2, 0.5
FREEZE_NITERS = round(FREEZE_EPOCHS * SPE)  # freeze_prototypes_niters = 1


@torch.no_grad()
def distributed_sinkhorn(out):
    """main_swav.py's, on one process."""
    Q = torch.exp(out / EPS).t()  # K x B
    Bs = Q.shape[1]
    Ks = Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(ITERS):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= Ks
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= Bs
    Q *= Bs
    return Q.t()


def main():
    gen = torch.Generator().manual_seed(23)
    torch.manual_seed(23)
    enc = prepare(encoder(), gen)
    proj = prepare(mlp([FEAT, HIDDEN, DIM]), gen)
    protos = nn.Linear(DIM, K, bias=False)
    config = {"temperature": T, "proj_hidden": HIDDEN, "proj_dim": DIM, "prototypes": K,
              "sinkhorn_eps": EPS, "sinkhorn_iters": ITERS, "queue_size": QUEUE,
              "freeze_prototypes_epochs": FREEZE_EPOCHS, "global_crops": 2, "local_crops": 2}
    # A small lr: with 6x6 crops, layer4 is 1x1, so one ReLU whose input
    # float32 rounding flips moves whole-image gradients by percents; bigger
    # steps spread the float32 and float64 trajectories until that happens
    # (at lr 0.05 by step 1; at 0.002 twelve seeds pass all three steps).
    g = Golden("swav", config, STEPS, lr=0.002, steps_per_epoch=SPE)
    g.state("", enc)
    g.state("projector.", proj)
    g.state("prototypes.", protos)
    queue = torch.zeros(len(CROPS_FOR_ASSIGN), QUEUE, DIM, dtype=torch.float64)
    g.tensor("queue", queue.float())
    f64(enc, proj, protos)
    n_crops = len(SIZES)
    use_the_queue = False
    for it in range(STEPS):
        with torch.no_grad():
            w = F.normalize(protos.weight.data.clone(), dim=1, p=2)
            protos.weight.copy_(w)
        v = views(gen, B, SIZES)
        # multi-resolution forward: one backbone pass per crop size
        feats = torch.cat([enc(torch.cat(v[:2]).double()), enc(torch.cat(v[2:]).double())])
        embedding = F.normalize(proj(feats), dim=1, p=2)
        output = protos(embedding)
        embedding = embedding.detach()
        loss = 0
        for i, crop_id in enumerate(CROPS_FOR_ASSIGN):
            with torch.no_grad():
                out = output[B * crop_id: B * (crop_id + 1)].detach()
                if use_the_queue or not torch.all(queue[i, -1, :] == 0):
                    use_the_queue = True
                    out = torch.cat((torch.mm(queue[i], protos.weight.t()), out))
                queue[i, B:] = queue[i, :-B].clone()
                queue[i, :B] = embedding[crop_id * B: (crop_id + 1) * B]
                q = distributed_sinkhorn(out)[-B:]
            subloss = 0
            for vv in np.delete(np.arange(n_crops), crop_id):
                x = output[B * vv: B * (vv + 1)] / T
                subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
            loss += subloss / (n_crops - 1)
        loss /= len(CROPS_FOR_ASSIGN)
        loss.backward()
        if it < FREEZE_NITERS:
            protos.weight.grad = None
        assert use_the_queue == (it == 2)
        g.step(it, v, loss, [("", enc), ("projector.", proj), ("prototypes.", protos)])
        g.after(it, "", enc)
        g.after(it, "projector.", proj)
        g.after(it, "prototypes.", protos)
        g.t["step%d.after.queue" % it] = queue.clone()
    g.save(sys.argv[1])


if __name__ == "__main__":
    main()
