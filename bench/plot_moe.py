#!/usr/bin/env python3
"""Plots bench_moe's JSON rows (bench/results/*-moe-*.json) for bench/RESULTS.md: per model, the
layer's time over the FP4 weight-read floor and its speedup over the cuBLAS BF16 grouped baseline,
against T, one line per run, with issue 5's targets drawn where they apply (floor <= 1.25x and
speedup >= 3x for T <= 64, speedup >= 1.5x at T = 4096).

  bench/plot_moe.py OUT.png RUN.json[=LABEL] [RUN.json[=LABEL] ...]

Needs matplotlib (pip install matplotlib); the benchmark itself does not.
"""
import json
import sys


def load(arg):
    path, _, label = arg.partition("=")
    with open(path) as f:
        d = json.load(f)
    rows = [r for r in d["rows"] if r.get("op") == "moe layer"]
    if not rows:
        sys.exit(f"plot_moe: {path} holds no 'moe layer' rows")
    for r in rows:
        for key in ("model", "T", "floor_ratio", "speedup_vs_cublas"):
            if key not in r:
                sys.exit(f"plot_moe: {path}: a row has no '{key}'")
    return label or f"{d.get('gpu', '?')} ({path.rsplit('/', 1)[-1]})", rows


def main(argv):
    if len(argv) > 1 and argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    if len(argv) < 3:
        print("usage: bench/plot_moe.py OUT.png RUN.json[=LABEL] [RUN.json[=LABEL] ...]", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load(a) for a in argv[2:]]
    models = sorted({r["model"] for _, rows in runs for r in rows})
    fig, axes = plt.subplots(2, len(models), figsize=(6.2 * len(models), 8.0), squeeze=False)
    for col, model in enumerate(models):
        ax_f, ax_s = axes[0][col], axes[1][col]
        for label, rows in runs:
            rs = sorted((r for r in rows if r["model"] == model), key=lambda r: r["T"])
            ts = [r["T"] for r in rs]
            ax_f.plot(ts, [r["floor_ratio"] for r in rs], marker="o", label=label)
            ax_s.plot(ts, [r["speedup_vs_cublas"] for r in rs], marker="o", label=label)
        ax_f.hlines(1.25, 1, 64, colors="k", linestyles="dashed", label="target, T <= 64: 1.25x")
        ax_f.axhline(1.0, color="0.6", linewidth=0.8)
        ax_s.hlines(3.0, 1, 64, colors="k", linestyles="dashed", label="target, T <= 64: 3x")
        ax_s.plot([4096], [1.5], marker="_", markersize=24, color="k", linestyle="none", label="target, T = 4096: 1.5x")
        ax_s.axhline(1.0, color="0.6", linewidth=0.8)
        all_t = sorted({r["T"] for _, rows in runs for r in rows if r["model"] == model})
        for ax in (ax_f, ax_s):
            ax.set_xscale("log", base=2)
            ax.set_xticks(all_t, [str(t) for t in all_t])
            ax.minorticks_off()
            ax.set_xlabel("tokens per call (T)")
            ax.grid(True, which="major", alpha=0.3)
        ax_f.set_title(f"DeepSeek-{model} MoE layer")
        ax_f.set_ylabel("fp4moe time / FP4 weight-read floor (lower is better)")
        ax_s.set_ylabel("speedup over cuBLAS BF16 grouped (higher is better)")
        ax_f.set_ylim(bottom=0)
        ax_s.set_ylim(bottom=0)
        ax_f.legend(fontsize=8)
        ax_s.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(argv[1], dpi=110)
    print(f"plot_moe: wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
