#!/usr/bin/env python3
"""NVFP4 weight quantization against PyTorch running ModelOpt's arithmetic.

The function below restates, op for op, the dynamic path of ModelOpt's NVFP4QTensor.quantize
(modelopt/torch/quantization/qtensor/nvfp4_tensor.py): weight_scale_2 = amax / (6*448), block
scale = fp8_e4m3(clamp(block_amax / (6*ws2), min=2^-9)) with zero blocks set to 1, codes from
searchsorted over the e2m1 midpoints plus the odd-midpoint tie fix, low nibble first. PyTorch's
own kernels do the rounding (its fp8 cast, its CUDA division), so this checks fp4moe's bytes
against the real thing, not against a second copy of our own rules.

Runs on CUDA when available (what ModelOpt exports on), else on the CPU (where PyTorch divides
by a Python float exactly: fp4moe's IEEE rounding variant). Exits 77 (CTest: skipped) when
torch is missing.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"SKIPPED: torch/numpy not available ({e}); this oracle runs where PyTorch is installed (the GPU machine)")
    sys.exit(77)


def modelopt_nvfp4(w: torch.Tensor):
    n, k = w.shape
    ws2 = w.abs().amax().float() / (6.0 * 448.0)
    blk = w.view(n, k // 16, 16)
    pba = blk.abs().amax(dim=-1).float()
    pbs = pba / (6.0 * ws2)
    pbs[pbs == 0] = 1.0
    pbs = pbs.clamp_(min=2**-9).to(torch.float8_e4m3fn)
    scaled = (blk / (pbs.to(torch.float32) * ws2).unsqueeze(-1)).view(n, k)
    bounds = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], device=w.device)
    sign = (scaled < 0).to(torch.uint8)
    a = scaled.abs()
    ordv = torch.searchsorted(bounds, a.contiguous(), out_int32=True).to(torch.uint8)
    eq = torch.any(a.unsqueeze(-1) == bounds[[1, 3, 5]], dim=-1).to(torch.uint8)
    q = (sign << 3) + ordv + eq
    packed = (q[..., 1::2] << 4) | q[..., 0::2]
    return packed.cpu().numpy(), pbs.view(torch.uint8).cpu().numpy(), np.float32(ws2.cpu().item())


def main() -> int:
    tool = sys.argv[1]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rounding = "cuda" if dev == "cuda" else "ieee"
    seed = int(os.environ.get("FP4MOE_SEED", int.from_bytes(os.urandom(4), "little")))
    print(f"seed={seed} (replay: FP4MOE_SEED={seed}); torch {torch.__version__} on {dev}")
    g = torch.Generator().manual_seed(seed)
    failures = 0
    for trial, (n, k, std) in enumerate([(64, 256, 0.02), (129, 4096, 0.05), (512, 2048, 1.0), (8, 64, 3e-4)]):
        w = (torch.randn(n, k, generator=g) * std)
        w[0, :16] = 0  # an all-zero block
        w[1, 16:32] *= 1e-7  # a block whose scale clamps at 2^-9
        w = w.to(torch.bfloat16)
        packed, scales, ws2 = modelopt_nvfp4(w.to(dev))
        with tempfile.TemporaryDirectory() as d:
            fin, fout = os.path.join(d, "w.f32"), os.path.join(d, "q.bin")
            w.float().numpy().tofile(fin)
            subprocess.run([tool, fin, str(n), str(k), rounding, fout], check=True)
            raw = np.fromfile(fout, dtype=np.uint8)
        ours_packed = raw[: n * k // 2].reshape(n, k // 2)
        ours_scales = raw[n * k // 2: n * k // 2 + n * k // 16].reshape(n, k // 16)
        ours_ws2 = raw[n * k // 2 + n * k // 16:].view(np.float32)[0]
        ok = (ours_ws2.view(np.uint32) == ws2.view(np.uint32)
              and (ours_scales == scales).all() and (ours_packed == packed).all())
        print(f"[{trial}] {n}x{k} std {std}: ws2 ours {ours_ws2!r} torch {ws2!r}; "
              f"scale mismatches {(ours_scales != scales).sum()}, code-byte mismatches {(ours_packed != packed).sum()}"
              f" -> {'OK' if ok else 'FAIL'}")
        failures += not ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
