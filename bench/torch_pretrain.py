"""PyTorch 1.13's side of the time-to-accuracy comparison (scripts/time_to_accuracy.sh):
`selfsup pretrain` with its defaults (SimCLR, ResNet-18 small stem, width 16,
Fashion-MNIST) on real data, with its k-NN evaluation every few epochs.

Usage: /usr/bin/python3 bench/torch_pretrain.py [--data fashion-mnist|DIR]
    [--epochs 2] [--steps N] [--batch-size 256] [--threads 2] [--workers 1]
    [--knn-every 0] [--seed 1] [--log-every 20] [--out FILE.jsonl]

Model, loss and optimizer are bench/torch_step.py's (imported, not copied):
WidthResNet (1 input channel, 3x3/1 stem, no max-pool, channels 16/32/64/128,
fc = Identity), projector Linear(128,2048)-BN-ReLU-Linear(2048,128), one
encoder pass over cat(view0, view1), NT-Xent (T 0.2, --temperature) over the 2N views; LARS
(eta 0.001, momentum 0.9, wd 1e-6; biases and BN affine: no weight decay, no
trust ratio) at lr 0.075 x sqrt(B), warm-up 0.5 epochs ((step+1)/warmup)
then cosine to 0, set every step. The schedule is src/train/pretrain.c's:
steps/epoch = n // B (drop_last), total = --steps or epochs x steps/epoch.

Augmentations: src/data/augment.c's ssl_aug_simclr as torchvision 0.14
transforms on float tensors in [0, 1] (uint8 / 255, as ToTensor):
RandomResizedCrop(28, scale (--global-scale-min, default 0.08, 1), ratio (3/4, 4/3), bilinear, no
antialias), RandomHorizontalFlip(0.5), RandomApply(ColorJitter(0.4, 0.4,
0.4, 0.1), p 0.8), RandomGrayscale(0.2), no Gaussian blur (selfsup blurs
only images > 32 px), Normalize(0.2860, 0.3530). On 1-channel images
torchvision's saturation, hue and grayscale return the image unchanged (as
selfsup's), so the jitter is brightness and contrast in random order. They
run per image in --workers DataLoader worker processes (default 1, like
selfsup's --workers 1 loader thread; 0: in the main process, on the clock),
shuffled each epoch, two views per image.

k-NN as selfsup's ssl_knn_eval (src/eval/knn.c, InstDisc weighting): the
encoder's pooled features in eval mode (running BN statistics), no
augmentation, inputs normalized as above; bank = every train image, queries
= every test image; rows L2-normalized, each query's top-k cosine
neighbours vote exp(sim / 0.1) for their class, argmax (lowest class on
ties); k = 20 and 200.

--out gets selfsup's log.jsonl "knn" lines: {"event":"knn","epoch","step",
"train_seconds","knn_top1_k20","knn_top1_k200" (percent),"eval_seconds"},
every --knn-every epochs (fractions allowed) and at the last step (or
--stop-seconds: the first evaluation at or past that much training time ends
the run, the schedule still that of the whole run). train_seconds is the
training wall time so far without the evaluations: it starts once the
loader's worker has been started (selfsup's clock also starts with its
loader threads running), and includes waiting for batches.
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode

from torch_step import LARS, LAYERS, SimCLR, WidthResNet, lr_at

NAMED = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
MEAN, STD = 0.2860, 0.3530  # augment.c: Fashion-MNIST train statistics (1 channel)


def read_idx(folder, name):
    """One IDX file of unsigned bytes, NAME or NAME.gz, as a uint8 tensor."""
    for path, opener in ((os.path.join(folder, name + ".gz"), gzip.open),
                         (os.path.join(folder, name), open)):
        if os.path.exists(path):
            with opener(path, "rb") as f:
                raw = f.read()
            break
    else:
        sys.exit(f"torch_pretrain: {folder}: no {name} or {name}.gz")
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] != 8:
        sys.exit(f"torch_pretrain: {path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    n = math.prod(dims)
    body = raw[4 + 4 * ndim:]
    if len(body) != n:
        sys.exit(f"torch_pretrain: {path}: holds {len(body)} bytes, its header says {n}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def load_split(folder, train):
    p = "train" if train else "t10k"
    x = read_idx(folder, f"{p}-images-idx3-ubyte")
    y = read_idx(folder, f"{p}-labels-idx1-ubyte").long()
    if x.dim() != 3 or y.shape != x.shape[:1]:
        sys.exit(f"torch_pretrain: {folder}: {p} images {tuple(x.shape)}, labels {tuple(y.shape)}")
    return x.unsqueeze(1), y  # (n, 1, h, w) uint8, (n)


def simclr_transform(side, scale_min):
    """ssl_aug_simclr for 1-channel images of side x side, crop area [scale_min, 1]."""
    ops = [T.RandomResizedCrop(side, scale=(scale_min, 1.0), ratio=(3 / 4, 4 / 3),
                               interpolation=InterpolationMode.BILINEAR, antialias=False),
           T.RandomHorizontalFlip(0.5),
           T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
           T.RandomGrayscale(0.2)]
    if side > 32:  # augment.c: blur destroys tiny images
        k = max(3, int(0.1 * side)) | 1
        ops.append(T.RandomApply([T.GaussianBlur(k, (0.1, 2.0))], p=0.5))
    ops.append(T.Normalize((MEAN,), (STD,)))
    return T.Compose(ops)


class TwoViews(Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i].float().div(255)
        return self.transform(x), self.transform(x)


@torch.no_grad()
def features(encoder, x, batch=512):
    """Pooled features of x (n, 1, h, w) normalized floats, eval mode."""
    encoder.eval()
    out = torch.cat([encoder(x[i:i + batch]) for i in range(0, len(x), batch)])
    encoder.train()
    return out


@torch.no_grad()
def knn_top1(bank, ybank, queries, yq, ks=(200, 20), temperature=0.1, n_classes=10, block=256):
    """ssl_knn_eval: accuracy (fraction) per k."""
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    kmax = max(ks)
    correct = {k: 0 for k in ks}
    for i in range(0, len(queries), block):
        sim = queries[i:i + block] @ bank.t()
        top, idx = sim.topk(kmax, dim=1)  # sorted, best first
        w = torch.exp((top - top[:, :1]).double() / temperature)  # knn.c's shift by the best
        lab = ybank[idx]
        for k in ks:
            votes = torch.zeros(len(top), n_classes, dtype=torch.float64)
            votes.scatter_add_(1, lab[:, :k], w[:, :k])
            correct[k] += (votes.argmax(1) == yq[i:i + block]).sum().item()  # first max on ties
    return {k: correct[k] / len(queries) for k in ks}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=0, help="total steps, overrides --epochs")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--knn-every", type=float, default=0,
                    help="epochs (0: off; a fraction: every round(X * steps per epoch) steps)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature")
    ap.add_argument("--global-scale-min", type=float, default=0.08,
                    help="smallest crop area (selfsup's --global-scale-min; SimCLR 0.08)")
    ap.add_argument("--out", default="", help="jsonl of the k-NN lines")
    ap.add_argument("--stop-seconds", type=float, default=0,
                    help="stop after the first k-NN evaluation at or past this much training time "
                         "(0: run the whole schedule; the schedule is unchanged either way)")
    a = ap.parse_args()
    if not 0 < a.global_scale_min <= 1:
        sys.exit(f"torch_pretrain: --global-scale-min {a.global_scale_min} must be in (0, 1]")
    if not a.temperature > 0:
        sys.exit(f"torch_pretrain: --temperature {a.temperature} must be > 0")
    if a.stop_seconds < 0 or (a.stop_seconds and not a.knn_every):
        sys.exit("torch_pretrain: --stop-seconds must be >= 0 and needs --knn-every")
    if a.knn_every < 0 or a.epochs < 0 or a.steps < 0 or a.threads < 1 or a.workers < 0:
        sys.exit("torch_pretrain: --knn-every, --epochs, --steps, --workers must be >= 0, --threads >= 1")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    folder = NAMED.get(a.data, a.data)
    xtr, ytr = load_split(folder, True)
    xte, yte = load_split(folder, False)
    n, side = len(xtr), xtr.shape[-1]
    B = a.batch_size
    if not 2 <= B <= n:
        sys.exit(f"torch_pretrain: --batch-size {B} must be in 2..{n}")
    if a.knn_every and n < 200:
        sys.exit("torch_pretrain: k-NN with k=200 needs >= 200 train images")
    spe = n // B
    total = a.steps if a.steps > 0 else a.epochs * spe
    knn_steps = max(1, int(a.knn_every * spe + 0.5)) if a.knn_every else 0  # ssl_knn_interval's llround
    if total < 1:
        sys.exit("torch_pretrain: --epochs or --steps must be >= 1")

    block, layers = LAYERS[18]
    encoder = WidthResNet(block, layers, a.width, 1, True)
    method = SimCLR(encoder, 8 * a.width, side)
    method.temperature = a.temperature
    for t in method.trained():
        t.train()
    kind, base_lr, scale, wd, mom, warmup_epochs = method.recipe
    assert kind == "lars" and scale == "sqrt"
    params = [p for t in method.trained() for p in t.parameters()]
    opt = LARS(params, mom, wd)
    peak_lr = base_lr * math.sqrt(B)
    warmup = int(warmup_epochs * spe)

    # the k-NN inputs: whole splits, no augmentation, normalized once
    def normalized(x):
        return (x.float().div(255) - MEAN) / STD
    bank_x, query_x = (normalized(xtr), normalized(xte)) if a.knn_every else (None, None)

    loader = DataLoader(TwoViews(xtr, simclr_transform(side, a.global_scale_min)), batch_size=B, shuffle=True,
                        drop_last=True, num_workers=a.workers,
                        persistent_workers=a.workers > 0,
                        generator=torch.Generator().manual_seed(a.seed))
    log = open(a.out, "w") if a.out else None
    start = {"event": "start", "impl": "pytorch", "torch": torch.__version__, "data": folder,
             "images": n, "batch": B, "steps_per_epoch": spe, "steps": total, "peak_lr": peak_lr,
             "threads": torch.get_num_threads(), "workers": a.workers, "seed": a.seed,
             "knn_every": a.knn_every, "stop_seconds": a.stop_seconds}
    if log:
        log.write(json.dumps(start) + "\n")
        log.flush()
    print(f"[torch_pretrain] simclr R18 w{a.width} on {folder}: {n} images, {spe} steps/epoch, "
          f"{total} steps, batch {B} x 2 views, {torch.get_num_threads()} threads, "
          f"{a.workers} loader workers, lars lr {peak_lr:.3g} wd {wd:g}, "
          f"temperature {a.temperature:g}", file=sys.stderr)

    def evaluate(step, clock):
        t0 = time.perf_counter()
        acc = knn_top1(features(encoder, bank_x), ytr, features(encoder, query_x), yte,
                       n_classes=int(max(ytr.max(), yte.max())) + 1)
        dt = time.perf_counter() - t0
        line = {"event": "knn", "epoch": round(step / spe, 6), "step": step,
                "train_seconds": round(clock, 2), "knn_top1_k20": round(100 * acc[20], 2),
                "knn_top1_k200": round(100 * acc[200], 2), "eval_seconds": round(dt, 2)}
        if log:
            log.write(json.dumps(line) + "\n")
            log.flush()
        print(f"[torch_pretrain] k-NN at epoch {step / spe:.4g} (step {step}, {clock:.1f} s of "
              f"training): k=20 {100 * acc[20]:.2f}% k=200 {100 * acc[200]:.2f}% ({dt:.1f} s)",
              file=sys.stderr)

    step, clock, loss_sum, n_int, stopped = 0, 0.0, 0.0, 0, False
    it = iter(loader)  # starts the worker, off the clock as selfsup's loader creation
    seg = t_int = time.perf_counter()  # the clock runs from seg; evaluations stop it
    while step < total and not stopped:
        for views in it:
            loss = method.loss(list(views), step, spe)
            for t in method.trained():
                t.zero_grad()
            loss.backward()
            lr = lr_at(step, warmup, total, peak_lr)
            opt.step(lr)
            lv = loss.item()
            if not math.isfinite(lv):
                sys.exit(f"torch_pretrain: step {step + 1}: loss is not finite")
            step += 1
            loss_sum += lv
            n_int += 1
            epoch_end = step % spe == 0
            if n_int == a.log_every or step == total or epoch_end:
                now = time.perf_counter()
                print(f"[torch_pretrain] ep {(step - 1) // spe + 1} step {step}/{total} loss "
                      f"{loss_sum / n_int:.4f} lr {lr:.3g} {n_int * B / (now - t_int):.1f} img/s",
                      file=sys.stderr)
                loss_sum, n_int, t_int = 0.0, 0, now
            if a.knn_every and (step % knn_steps == 0 or step == total):
                now = time.perf_counter()
                clock += now - seg
                evaluate(step, clock)
                seg = t_int = time.perf_counter()
                if a.stop_seconds and clock >= a.stop_seconds and step < total:
                    stopped = True
                    break
            if step == total:
                break
        if step < total and not stopped:
            it = iter(loader)  # the next epoch's shuffle (on the clock, as selfsup's)
    clock += time.perf_counter() - seg
    done = {"event": "done", "steps": step, "stopped_early": stopped, "train_seconds": round(clock, 2),
            "img_per_s": round(step * B / clock, 2) if clock > 0 else None}
    if log:
        log.write(json.dumps(done) + "\n")
        log.close()
    print(json.dumps(done))


if __name__ == "__main__":
    main()
