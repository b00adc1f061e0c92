#!/usr/bin/env python3
"""Turn a bench_linear JSON file into the tables of bench/RESULTS.md (printed to stdout).

usage: make_results.py results/FILE.json [--commit C] [--date D]

Targets (from the issue): decode (M <= 16) on shapes with >= 16 MB of FP4 weight bytes:
roof_fraction >= 0.85; smaller decode shapes: >= 2x faster than cuBLAS BF16; prefill
(M >= 4096): >= 85% of cuBLAS BF16 TFLOP/s on the same shape.
"""
import json
import sys


def main():
    args = sys.argv[1:]
    path = args[0]
    meta = {"commit": "?", "date": "?"}
    for i, a in enumerate(args):
        if a == "--commit":
            meta["commit"] = args[i + 1]
        if a == "--date":
            meta["date"] = args[i + 1]
    d = json.load(open(path))
    rows = d["rows"]
    print(f"GPU: {d['gpu']} ({d['sms']} SMs). cuBLAS BF16 peak (8192^3): {d['cublas_bf16_peak_tflops']:.0f} TFLOP/s. "
          f"Streaming read of 1 GiB: {d['read_1gib_tbps']:.2f} TB/s. Date: {meta['date']}. Commit: {meta['commit']}.\n")
    print("| model | op | N | K | M | fp4moe us | cuBLAS bf16 us | speedup | roof us | roof frac | fp4moe TFLOP/s | vs cuBLAS TFLOP/s | target | met |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    met = missed = 0
    for r in rows:
        fp4_bytes = r["n"] * r["k"] // 2
        target, ok = "", None
        if r["m"] <= 16:
            if fp4_bytes >= 16 * 10**6:
                target, ok = "roof >= 0.85", r["roof_fraction"] >= 0.85
            else:
                target, ok = "speedup >= 2x", r["speedup_vs_cublas"] >= 2.0
        elif r["m"] >= 4096:
            target, ok = "TFLOP/s >= 85% cuBLAS", r["tflops"] >= 0.85 * r["cublas_tflops"]
        if ok is not None:
            met += ok
            missed += not ok
        print(f"| {r['model']} | {r['op'].replace('|', '&#124;')} | {r['n']} | {r['k']} | {r['m']} | {r['fp4moe_us']:.1f} | "
              f"{r['cublas_bf16_us']:.1f} | {r['speedup_vs_cublas']:.2f}x | {r['roof_us']:.1f} | {r['roof_fraction']:.2f} | "
              f"{r['tflops']:.0f} | {r['tflops'] / r['cublas_tflops']:.2f} | {target} | "
              f"{'' if ok is None else ('yes' if ok else 'NO')} |")
    print(f"\nTargeted rows: {met} met, {missed} missed.")


if __name__ == "__main__":
    main()
