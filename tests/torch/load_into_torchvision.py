"""Loads a selfsup checkpoint's encoder into torchvision's ResNet and checks that
PyTorch computes the same features as `selfsup embed` did.

usage: /usr/bin/python3 load_into_torchvision.py CKPT EMBED_PREFIX IDX_DIR
Exits non-zero on any mismatch. Prints "torchvision: N passed, M failed".
"""
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch
import torchvision

DT = {"F32": np.float32, "I64": np.int64, "I32": np.int32, "U8": np.uint8, "F64": np.float64}


def load_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for k, v in header.items():
        s, e = v["data_offsets"]
        a = np.frombuffer(b[8 + n + s:8 + n + e], dtype=DT[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(a.copy())
    return meta, out


def read_idx(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim:], np.uint8).reshape(dims)


def main():
    ckpt, prefix, idx_dir = sys.argv[1:4]
    meta, tensors = load_safetensors(ckpt)
    depth, width = int(meta["arch"].replace("resnet", "")), int(meta["width"])
    ch = int(meta["in_channels"])
    assert width == 64, "torchvision's ResNet has width 64"
    model = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34,
             50: torchvision.models.resnet50}[depth]()
    if meta["stem"] == "small":
        model.conv1 = torch.nn.Conv2d(ch, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    elif ch != 3:
        model.conv1 = torch.nn.Conv2d(ch, 64, 7, 2, 3, bias=False)
    model.fc = torch.nn.Identity()
    encoder = {k: v for k, v in tensors.items()
               if not k.startswith(("projector.", "predictor.", "optim."))}
    model.load_state_dict(encoder, strict=True)  # every name and shape must match
    model.eval()
    name = "t10k-images-idx3-ubyte"
    path = os.path.join(idx_dir, name if os.path.exists(os.path.join(idx_dir, name)) else name + ".gz")
    x = read_idx(path).astype(np.float32) / 255.0
    x = (x - 0.2860) / 0.3530  # selfsup's Fashion-MNIST normalization
    with torch.no_grad():
        feats = model(torch.from_numpy(x[:, None])).numpy()
    ours = np.load(prefix + "_features.npy")
    passed = failed = 0
    err = np.abs(feats - ours).max() / (np.abs(feats).max() + 1e-12)
    if ours.shape == feats.shape and err < 1e-4:
        passed += 1
    else:
        failed += 1
        print("FAIL torchvision: features differ: shape %s vs %s, max rel err %.3g" % (ours.shape, feats.shape, err))
    print("torchvision features vs selfsup embed: max error %.3g of the largest feature" % err)
    print("torchvision: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
