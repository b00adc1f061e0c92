#!/usr/bin/env python3
"""fp4moe's safetensors reader and writer against the Python safetensors library, both ways.

  python -> fp4moe: random tensors of every common dtype serialized by safetensors, read by
                    `st_interop dump`; names, dtypes, shapes, metadata and byte hashes must match.
  fp4moe -> python: `st_interop write` output deserialized by safetensors; bytes must follow
                    the writer's formula exactly, metadata must round-trip.
Exits 77 (CTest: skipped) with the reason when the safetensors package is unavailable.
"""
import json
import os
import random
import subprocess
import sys
import tempfile


def fnv1a(b: bytes) -> int:
    h = 0xcbf29ce484222325
    for c in b:
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: safetensors_interop.py ST_INTEROP_BINARY")
        return 2
    tool = sys.argv[1]
    try:
        import numpy as np
        import safetensors
        import safetensors.numpy
        from safetensors import deserialize
    except ImportError as e:
        print(f"SKIPPED: the Python safetensors or numpy package is not available ({e}); tools/setup.sh installs them")
        return 77
    print(f"python safetensors {safetensors.__version__}")
    seed = int(os.environ.get("FP4MOE_SEED", random.SystemRandom().randrange(1 << 62)))
    rng = random.Random(seed)
    print(f"seed={seed} (replay: FP4MOE_SEED={seed})")
    # The dtypes numpy carries (BF16/F8 files from python need torch; fp4moe -> python covers them).
    np_types = {"U8": np.uint8, "I8": np.int8, "F16": np.float16, "I16": np.int16, "F32": np.float32, "I32": np.int32,
                "F64": np.float64, "I64": np.int64, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_}
    sizes = {k: np.dtype(v).itemsize for k, v in np_types.items()}
    failures = 0
    with tempfile.TemporaryDirectory() as d:
        # python -> fp4moe
        tensors = {}
        for k in range(24):
            dt = rng.choice(sorted(sizes))
            shape = [rng.randrange(0, 6) for _ in range(rng.randrange(0, 4))]
            n = 1
            for s in shape:
                n *= s
            data = bytes(rng.randrange(0, 2) if dt == "BOOL" else rng.randrange(256) for _ in range(n * sizes[dt]))
            tensors[f"model.layers.{k}.t{k}.weight"] = {"dtype": dt, "shape": shape, "data": data}
        meta = {"format": "pt", "note": "interop ünïcode"}
        path = os.path.join(d, "py.safetensors")
        arrays = {n: np.frombuffer(t["data"], dtype=np_types[t["dtype"]]).reshape(t["shape"]) for n, t in tensors.items()}
        safetensors.numpy.save_file(arrays, path, metadata=meta)
        out = subprocess.run([tool, "dump", path], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"FAIL: fp4moe could not read the file python wrote: {out.stderr}")
            return 1
        got = json.loads(out.stdout)
        if got["metadata"] != meta:
            print(f"FAIL: metadata {got['metadata']} != {meta}")
            failures += 1
        if set(got["tensors"]) != set(tensors):
            print("FAIL: tensor names differ")
            failures += 1
        for name, t in tensors.items():
            g = got["tensors"].get(name)
            if g is None:
                continue
            if g["dtype"] != t["dtype"] or g["shape"] != t["shape"] or int(g["fnv1a"]) != fnv1a(t["data"]):
                print(f"FAIL: {name}: fp4moe read {g}, python wrote {t['dtype']} {t['shape']} fnv1a {fnv1a(t['data'])}")
                failures += 1
        print(f"python -> fp4moe: {len(tensors)} tensors compared")

        # fp4moe -> python
        path = os.path.join(d, "cpp.safetensors")
        w = subprocess.run([tool, "write", path], capture_output=True, text=True)
        if w.returncode != 0:
            print(f"FAIL: st_interop write: {w.stderr}")
            return 1
        with open(path, "rb") as f:
            raw = f.read()
        try:
            items = deserialize(raw)
        except Exception as e:  # an older safetensors may lack a dtype (F8_E8M0); say so
            print(f"FAIL: python safetensors rejected fp4moe's file: {e}")
            return 1
        order = ["embed.weight", "layers.0.w.weight", "layers.0.w.weight_scale", "layers.0.w.weight_scale_2", "ids", "empty", "half", "mx.scale"]
        names = set()
        for name, t in items:
            names.add(name)
            k = order.index(name)
            data = bytes(t["data"])
            want = bytes(((31 * i + 7 * k + 3) & 0xFF) for i in range(len(data)))
            if data != want:
                print(f"FAIL: {name}: bytes differ from the writer's formula")
                failures += 1
        if names != set(order):
            print(f"FAIL: python read {sorted(names)}, expected {sorted(order)}")
            failures += 1
        with safetensors.safe_open(path, framework="numpy") as f:
            if f.metadata() != {"format": "pt", "producer": "fp4moe"}:
                print(f"FAIL: metadata read by python: {f.metadata()}")
                failures += 1
            scale2 = f.get_tensor("layers.0.w.weight_scale_2")
            if scale2.shape != () or scale2.tobytes() != bytes(((31 * i + 7 * 3 + 3) & 0xFF) for i in range(4)):
                print(f"FAIL: scalar F32 read by python: shape {scale2.shape}")
                failures += 1
        print(f"fp4moe -> python: {len(items)} tensors compared")
    print("PASS" if failures == 0 else f"{failures} failures")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
