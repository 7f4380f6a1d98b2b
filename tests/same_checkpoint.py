"""Asserts two selfsup checkpoints hold the same tensors, byte for byte, and
that each KEY=VALUE metadata pair is the same in both (tests/cli.sh's resume
checks: a resumed run against the uninterrupted one).

Usage: /usr/bin/python3 tests/same_checkpoint.py A B [KEY=VALUE ...]
"""
import json
import struct
import sys


def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__")
    return meta, {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}


def main():
    ma, ta = load(sys.argv[1])
    mb, tb = load(sys.argv[2])
    for pair in sys.argv[3:]:
        key, want = pair.split("=", 1)
        assert ma.get(key) == mb.get(key) == want, (key, ma.get(key), mb.get(key), want)
    assert ta.keys() == tb.keys(), sorted(set(ta) ^ set(tb))[:5]
    diff = [k for k in ta if ta[k] != tb[k]]
    assert not diff, diff[:5]


if __name__ == "__main__":
    main()
