#!/usr/bin/env python3
"""Cross-checks fp4moe's e4m3 and e2m1 codecs against ml_dtypes, an independent implementation.

Runs the codec_table tool (path in argv[1]) on fresh random float32 values plus every tie and
boundary, and compares codes and decoded values bit for bit. Exits 77 (CTest: skipped) when
numpy/ml_dtypes are not importable, printing why.

Where fp4moe deliberately differs from ml_dtypes, the comparison is restricted, and the
fp4moe rule is checked on its own:
  - e4m3: ml_dtypes turns |x| > 464 into NaN; fp4moe saturates to +-448 (scales must never be NaN).
  - e2m1: NaN has no e2m1 code; fp4moe gives +0. -0.0 encodes to +0 (ModelOpt takes the sign
    from x < 0); ml_dtypes keeps the sign bit.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import ml_dtypes
except ImportError as e:  # visible reason, reported as skipped by CTest
    print(f"SKIPPED: numpy/ml_dtypes not available ({e}); run tools/setup.sh to install them")
    sys.exit(77)


def main() -> int:
    tool = sys.argv[1]
    seed = int(os.environ.get("FP4MOE_SEED", int.from_bytes(os.urandom(4), "little")))
    print(f"seed={seed} (replay: FP4MOE_SEED={seed})")
    rng = np.random.default_rng(seed)

    # Every e4m3 and e2m1 value, every midpoint between neighbours, and their float32
    # neighbours; then random values over the whole range, log-uniform in magnitude.
    e4 = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    e2 = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float32)
    grid = np.unique(np.concatenate([e4[np.isfinite(e4)], e2]))
    mids = (grid[:-1].astype(np.float64) + grid[1:]) / 2
    mids = mids.astype(np.float32)
    special = np.concatenate([
        grid, mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)),
        np.array([448, 464, 479.9, 480, 500, 1e30, np.inf, 6, 6.5, 1e-10, 2.0**-10, 2.0**-9 * 0.5,
                  np.float32(1e-45), -np.inf], dtype=np.float32),
    ])
    mag = np.exp(rng.uniform(np.log(1e-5), np.log(1e4), 200000)).astype(np.float32)
    sign = np.where(rng.random(mag.size) < 0.5, -1, 1).astype(np.float32)
    xs = np.concatenate([special, -special, mag * sign, rng.normal(0, 2, 50000).astype(np.float32)])
    xs = xs.astype(np.float32)

    with tempfile.TemporaryDirectory() as d:
        fin, fout = os.path.join(d, "in.f32"), os.path.join(d, "out.bin")
        xs.tofile(fin)
        subprocess.run([tool, fin, fout], check=True)
        raw = np.fromfile(fout, dtype=np.uint8)
    n = xs.size
    codes = raw[: 2 * n].reshape(n, 2)
    ours_e4, ours_e2 = codes[:, 0], codes[:, 1]
    dec_e4 = raw[2 * n: 2 * n + 1024].view(np.float32)
    dec_e2 = raw[2 * n + 1024:].view(np.float32)

    failures = []

    def check(name, mask, ours, ref):
        bad = np.nonzero(mask & (ours != ref))[0]
        if bad.size:
            i = bad[0]
            failures.append(f"{name}: {bad.size} mismatches, first x={xs[i]!r} ours=0x{ours[i]:02x} ml_dtypes=0x{ref[i]:02x}")

    absx = np.abs(xs)
    ref_e4 = xs.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    check("e4m3 encode (|x| <= 464)", absx <= 464, ours_e4, ref_e4)
    sat = (absx > 464) & ~np.isnan(xs)
    check("e4m3 saturation (|x| > 464)", sat, ours_e4, np.where(xs < 0, 0xFE, 0x7E).astype(np.uint8))

    ref_e2 = xs.astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0xF
    check("e2m1 encode", ~np.isnan(xs) & (xs != 0), ours_e2, ref_e2)
    check("e2m1 encode of zeros", xs == 0, ours_e2, np.zeros_like(ours_e2))

    ref_dec_e4 = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    same = (dec_e4.view(np.uint32) == ref_dec_e4.view(np.uint32)) | (np.isnan(dec_e4) & np.isnan(ref_dec_e4))
    if not same.all():
        failures.append(f"e4m3 decode differs at codes {np.nonzero(~same)[0].tolist()}")
    ref_dec_e2 = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float32)
    if not (dec_e2.view(np.uint32) == ref_dec_e2.view(np.uint32)).all():
        failures.append(f"e2m1 decode differs: ours {dec_e2.tolist()} ml_dtypes {ref_dec_e2.tolist()}")

    print(f"compared {n} encodes of each codec, 256 e4m3 and 16 e2m1 decodes (ml_dtypes {ml_dtypes.__version__})")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
