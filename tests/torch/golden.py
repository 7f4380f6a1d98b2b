"""Writes golden tensors for the C tests as safetensors (no extra packages).

Usage from a generator script:  save(path, {"name": tensor, ...}, {"key": "value"})
"""
import json
import struct

import numpy as np


def save(path, tensors, meta=None):
    header, blobs, off = {}, [], 0
    if meta:
        header["__metadata__"] = {k: str(v) for k, v in meta.items()}
    for name, t in tensors.items():
        a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        dt = {np.dtype("float32"): "F32", np.dtype("int64"): "I64",
              np.dtype("int32"): "I32", np.dtype("uint8"): "U8"}[a.dtype]
        b = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
