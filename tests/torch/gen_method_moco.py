"""Golden for tests/test_methods.c: three MoCo v2 steps on selfsup's tiny
encoder, written after facebookresearch/moco's builder.py (MoCo with
mlp=True, T=0.2, the v2 setting). See method_golden.py for the format.

Shuffle-BN with G = 2 BN groups in one process (the way selfsup mimics the
paper's multi-GPU shuffle): queries in G contiguous sub-batches (each GPU's
local batch); keys shuffled by a permutation, encoded in G sub-batches,
un-shuffled. The permutation is selfsup's: a Fisher-Yates shuffle driven by
ssl_rng_derive(0x6D6F636F, step, 0) (xoshiro256** seeded through
splitmix64, bounded draws by Lemire's method), reimplemented below.

The queue holds K = 16 keys for B = 8 and starts at queue_ptr 8, so the
three steps write rows 8, 0 and 8 again (the ring wraps and the oldest keys
are overwritten) while the loss reads the keys enqueued before. The
metadata's total_steps is 4, so a cosine momentum schedule (which MoCo does
not have) would be caught. A second golden, method_moco_final.safetensors,
sets final_momentum: the key encoder's momentum then follows solo-learn's
MomentumUpdater (its MoCo v2+ recipe), a cosine from base to final over
total_steps, tau_k = final - (final - base) * (cos(pi k / total) + 1) / 2
at the end of step k.

Usage: /usr/bin/python3 tests/torch/gen_method_moco.py OUTDIR
"""
import copy
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from method_golden import FEAT, Golden, encoder, f64, mlp, prepare, views  # noqa: E402
from selfsup_rng import derive  # noqa: E402

T, HIDDEN, DIM, B, K, G, M, STEPS, TOTAL = 0.2, 24, 16, 8, 16, 2, 0.9, 3, 4
M_FINAL = 0.99  # the second golden's final_momentum
PTR0 = 8
SHUFFLE_SEED = 0x6D6F636F


def shuffle_perm(step, n):
    r = derive(SHUFFLE_SEED, step, 0)
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = r.below(i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return torch.tensor(perm)


# ---- MoCo v2 ----
def grouped(enc, x):
    """Each of the G sub-batches through enc on its own (one GPU each)."""
    return torch.cat([enc(c) for c in x.chunk(G)])


@torch.no_grad()
def momentum_update(key, query, m):
    for pk, pq in zip(key.parameters(), query.parameters()):
        pk.data = pk.data * m + pq.data * (1.0 - m)


def tau(k, final):
    """The momentum of step k's update: constant M (the paper), or
    solo-learn's cosine from M to final."""
    if final is None:
        return M
    return final - (final - M) * (math.cos(math.pi * k / TOTAL) + 1) / 2


def build(outdir, final=None):
    gen = torch.Generator().manual_seed(23)
    torch.manual_seed(23)
    enc_q = prepare(encoder(), gen)
    head_q = mlp([FEAT, HIDDEN, DIM], hidden_bn=False)  # fc: Linear-ReLU-Linear
    # The official key encoder is built anew and takes the query's
    # parameters; its BN running statistics are its own from then on.
    enc_k = encoder()
    for pk, pq in zip(enc_k.parameters(), enc_q.parameters()):
        pk.data.copy_(pq.data)
    head_k = copy.deepcopy(head_q)
    queue = F.normalize(torch.randn(DIM, K, generator=gen), dim=0)  # official (dim, K)
    ptr = PTR0

    cfg = {"temperature": T, "proj_hidden": HIDDEN, "proj_dim": DIM, "base_momentum": M,
           "queue_size": K, "bn_groups": G}
    if final is not None:
        cfg["final_momentum"] = final
    g = Golden("moco", cfg, STEPS, lr=0.1, total_steps=TOTAL)
    g.state("", enc_q)
    g.state("projector.", head_q)
    g.state("teacher.", enc_k)
    g.state("teacher.projector.", head_k)
    g.tensor("queue", queue.t().contiguous())
    g.tensor("queue_ptr", torch.tensor(PTR0, dtype=torch.int64))
    f64(enc_q, head_q, enc_k, head_k)
    queue = queue.double()

    for k in range(STEPS):
        v = views(gen, B, [12, 12])
        im_q, im_k = v[0].double(), v[1].double()
        q = F.normalize(head_q(grouped(enc_q, im_q)), dim=1)
        with torch.no_grad():
            # (the official momentum update happens here; see below)
            perm = shuffle_perm(k, B)
            ks = F.normalize(head_k(grouped(enc_k, im_k[perm])), dim=1)
            key = ks[torch.argsort(perm)]
        l_pos = torch.einsum("nc,nc->n", [q, key]).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", [q, queue.clone().detach()])
        logits = torch.cat([l_pos, l_neg], dim=1) / T
        loss = F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))
        loss.backward()
        g.step(k, v, loss, [("", enc_q), ("projector.", head_q)])
        # _dequeue_and_enqueue: the batch's keys replace the oldest ones
        queue[:, ptr:ptr + B] = key.t()
        ptr = (ptr + B) % K
        # The official forward of step k+1 starts with this update, from
        # the weights step k produced; at step 0 it is the identity (the key
        # encoder is a copy), so applying it at the end of each step is the
        # same sequence, and the state after step k is what selfsup keeps.
        momentum_update(enc_k, enc_q, tau(k, final))
        momentum_update(head_k, head_q, tau(k, final))
        g.after(k, "", enc_q)
        g.after(k, "projector.", head_q)
        g.after(k, "teacher.", enc_k)
        g.after(k, "teacher.projector.", head_k)
        g.tensor("step%d.after.queue" % k, queue.t().contiguous())
    g.save(outdir, None if final is None else "moco_final")


if __name__ == "__main__":
    build(sys.argv[1])
    build(sys.argv[1], M_FINAL)
