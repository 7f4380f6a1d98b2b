"""Writes a small IDX copy of Fashion-MNIST (first N train / M test images) for fast CLI tests.

usage: make_subset.py OUTDIR [N_TRAIN] [N_TEST]    (any python3; standard library only)
"""
import gzip
import os
import struct
import sys

SRC = "/usr/share/datasets/fashion-mnist"


def read(name):
    with gzip.open(os.path.join(SRC, name), "rb") as f:
        return f.read()


def subset(name, n, out, gz):
    data = read(name)
    magic, count = struct.unpack(">II", data[:8])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    per = 1
    for d in dims[1:]:
        per *= d
    head = struct.pack(">I", magic) + struct.pack(">" + "I" * ndim, n, *dims[1:])
    body = data[4 + 4 * ndim:4 + 4 * ndim + n * per]
    path = os.path.join(out, name if gz else name[:-3])
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(head + body)


def main():
    out = sys.argv[1]
    ntr = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    nte = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    os.makedirs(out, exist_ok=True)
    subset("train-images-idx3-ubyte.gz", ntr, out, True)
    subset("train-labels-idx1-ubyte.gz", ntr, out, True)
    subset("t10k-images-idx3-ubyte.gz", nte, out, False)   # plain, to cover both
    subset("t10k-labels-idx1-ubyte.gz", nte, out, False)


if __name__ == "__main__":
    main()
