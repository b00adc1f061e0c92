#!/usr/bin/env python3
"""Parity of fp4moe's DeepSeek-V4 CPU forward with transformers (the reference, 5.17).

For each config (random tiny V4 models mixing sliding / CSA / HCA layers, passed as explicit
`compress_ratios`, and hash + scored MoE layers):
  1. build DeepseekV4ForCausalLM with transformers, re-draw every weight (see redraw: sinks,
     position biases and mHC bases non-zero, block updates small next to the residual stream as
     in a deep trained model), round them to bf16 values, save_pretrained;
  2. `fp4moe run` the saved checkpoint: a prefill of P prompt tokens (past the sliding window
     and many compression windows) then D greedy decode steps, logits of every position;
  3. transformers runs the same prompt as one prefill with a cache, then the same D tokens
     one decode step at a time (teacher-forced with fp4moe's tokens), and the logits are
     compared per position: cosine, max |diff|, argmax;
  4. the same with NVFP4 weights: `fp4moe quantize --scheme nvfp4`, and transformers given
     the dequantized weights (e2m1 x e4m3 block scale x weight_scale_2, in fp32).
Each comparison is run twice: fp4moe --dtype fp32 against transformers in fp32 (targets:
cosine >= 0.99999 at every position and the same argmax everywhere) and fp4moe --dtype bf16
against an all-bf16 transformers model (target: cosine >= 0.999 at every position).

What the bf16 comparison measures. fp4moe's bf16 mode rounds where transformers' bf16 model
rounds. Fed transformers' exact bf16 input streams, each fp4moe block reproduces transformers'
CPU bf16 block bit for bit, except for 1-ulp differences where two fp32 summation orders (or
exp/rsqrt implementations) land on different sides of a bf16 rounding boundary: they start at a
few positions in a few hundred, then reach, at the ulp level, later positions that attend to
the affected keys. They cannot be removed (CUDA and CPU torch differ from each other likewise).
They matter through the discrete choices of the model: the router's top-k over bf16 keys and
the CSA indexer's top-k, where near-tied candidates flip, and a flip swaps a whole expert or
compressed entry. How far one flip moves the logits depends on the draw, not on the
implementation: with block updates as large as the residual stream and 2 of 8 experts per
token (this script's first draws), one flip moved a position to cosine 0.995, and transformers'
own bf16 model sat at 0.98 from its fp32 model. The draws therefore follow a trained deep
model: the residual streams are 4x the sub-layer outputs' scale (the embedding is drawn with
std 4, as the stream deep inside a 43-layer model carries many earlier updates), the shared
expert is drawn like a routed one, and 6 of 16 experts are routed per token (V4-Flash routes 6),
so a boundary flip swaps a sixth of the routed output instead of half. The report gives each
block's update size next to the stream (`update_ratio`) and the noise floor (transformers bf16
against transformers fp32) so the margin can be judged. Small block updates also make the logits
less sensitive to an error inside one block, so the fp32 comparison runs on a second, "stress"
draw as well (embedding std 1, shared expert at gate/up gain 2: updates as large as the
stream), where any block's error shows; DRAWS lists both.

Ties: keys that are exactly equal in bf16 are common at the router's top-k boundary (about 1%
of tokens). fp4moe takes the lowest expert index, as torch's CUDA topk does; torch's CPU topk
does not, so with --device cpu the reference router selects with a stable sort (the set CUDA's
topk returns) and the report says so.

Usage: tools/parity_v4.py --fp4moe build/fp4moe [--out tools/parity/parity_v4.json] [--device cuda]
Exit status 0 when every target is met, 1 otherwise.
"""
import argparse
import copy
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file as np_load
from safetensors.torch import load_file, save_file
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4TopKRouter

E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)

CONFIGS = {
    # S C H C; first layer hash-routed. Window 64, CSA 4 (top-8 of up to 80 entries), HCA 128.
    "mixed-SCHC": dict(compress_ratios=[0, 4, 128, 4], num_hash_layers=1, sliding_window=64, index_topk=8),
    # H C S H C with YaRN on the compressed layers, two hash layers.
    "mixed-HCSHC-yarn": dict(compress_ratios=[128, 4, 0, 128, 4], num_hash_layers=2, sliding_window=48, index_topk=6,
                             rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
                                              "beta_fast": 32.0, "beta_slow": 1.0}),
}


# Weight draws: "trained" (block updates a few percent of the residual stream, as deep in a
# trained model) for both comparisons; "stress" (embedding std 1 and a shared expert at gate/up
# gain 2: block updates as large as the stream, so an error in any block moves the logits)
# for the fp32 comparison only, where it makes the exactness check as sensitive as possible.
DRAWS = (("trained", {}, ("fp32", "bf16")), ("stress", {"embed_std": 1.0, "shared_gain": 2.0}, ("fp32",)))


def make_config(overrides):
    kw = dict(vocab_size=512, hidden_size=64, num_attention_heads=4, head_dim=64, partial_rotary_factor=0.25,
              q_lora_rank=32, o_groups=2, o_lora_rank=32, index_n_heads=16, index_head_dim=32, n_routed_experts=16,
              num_experts_per_tok=6, moe_intermediate_size=32, hc_mult=4, max_position_embeddings=1024,
              num_nextn_predict_layers=0)
    kw.update(overrides)
    kw["num_hidden_layers"] = len(kw["compress_ratios"])
    return DeepseekV4Config(**kw)


def redraw(model, cfg, gen, expert_gain=1.0, down_gain=0.3, router_gain=4.0, embed_std=4.0, shared_gain=None):
    """Every parameter and buffer drawn afresh, rounded to bf16 values, shaped like a trained deep
    model (module docstring): router logits well spread; every expert, the shared one included,
    with gate/up gain `expert_gain` and down gain `down_gain`; the embedding (so the residual
    streams) at std `embed_std`, which puts each block's update at a few percent of a stream."""
    H = cfg.hidden_size

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=gen) * std + mean

    with torch.no_grad():
        for name, p in model.named_parameters():
            s = tuple(p.shape)
            if name.endswith("embed_tokens.weight"):
                v = normal(s, embed_std)
            elif name.endswith("lm_head.weight"):
                v = normal(s, 4.0 / math.sqrt(H))
            elif name.endswith(("hc.fn", "hc_fn")):
                v = normal(s, 1.0 / math.sqrt(s[-1]))
            elif name.endswith(("hc.base", "hc_base")):
                v = normal(s, 0.5)
            elif name.endswith(("hc.scale", "hc_scale")):
                v = normal(s, 0.2, 1.0)
            elif name.endswith("sinks"):
                v = normal(s, 1.0)
            elif name.endswith("position_bias"):
                v = normal(s, 0.5)
            elif name.endswith(("shared_experts.gate_proj.weight", "shared_experts.up_proj.weight")):
                v = normal(s, (shared_gain or expert_gain) / math.sqrt(s[-1]))
            elif name.endswith("experts.gate_up_proj"):
                v = normal(s, expert_gain / math.sqrt(s[-1]))
            elif name.endswith(("experts.down_proj", "shared_experts.down_proj.weight")):
                v = normal(s, down_gain / math.sqrt(s[-1]))
            elif name.endswith("mlp.gate.weight"):
                v = normal(s, router_gain / math.sqrt(s[-1]))
            elif p.dim() == 1:  # norm weights
                v = normal(s, 0.1, 1.0)
            elif p.dim() == 2:
                gain = 2.0 if name.endswith("gate_proj.weight") else 1.0  # compressor gates: spread softmaxes
                v = normal(s, gain / math.sqrt(s[-1]))
            else:
                raise RuntimeError(f"no rule for parameter {name} {s}")
            p.copy_(v.to(torch.bfloat16).float())
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(normal(tuple(b.shape), 0.1).to(torch.bfloat16).float())
            elif name.endswith("tid2eid"):
                V, k = b.shape
                b.copy_(torch.stack([torch.randperm(cfg.n_routed_experts, generator=gen)[:k] for _ in range(V)]))


def router_forward_lowest_index_ties(self, hidden_states):
    """transformers 5.17's DeepseekV4TopKRouter.forward with torch.topk replaced by a stable
    descending sort: among keys equal to the k-th it keeps the lowest expert indices, the set
    torch's CUDA topk returns (its CPU topk may keep others)."""
    flat = hidden_states.reshape(-1, self.hidden_dim)
    logits = torch.nn.functional.linear(flat, self.weight)
    scores = self.score_fn(logits)
    keys = scores + self.e_score_correction_bias
    indices = torch.sort(keys, dim=-1, descending=True, stable=True).indices[:, : self.top_k]
    weights = scores.gather(1, indices)
    weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return logits, weights * self.routed_scaling_factor, indices


def update_ratios(model, prompt):
    """Per layer, the median over positions of |block output| / |residual stream| (the mean norm
    of the hc_mult streams entering the block), for attention and for the MoE, fp32 model."""
    cap, hooks = {}, []
    for l, layer in enumerate(model.model.layers):
        hooks += [layer.attn_hc.register_forward_pre_hook(lambda m, i, l=l: cap.__setitem__(("Xa", l), i[0])),
                  layer.ffn_hc.register_forward_pre_hook(lambda m, i, l=l: cap.__setitem__(("Xf", l), i[0])),
                  layer.self_attn.register_forward_hook(lambda m, i, o, l=l: cap.__setitem__(("a", l), o[0])),
                  layer.mlp.register_forward_hook(lambda m, i, o, l=l: cap.__setitem__(("f", l), o))]
    with torch.no_grad():
        model(input_ids=torch.tensor([prompt]))
    for h in hooks:
        h.remove()
    r = {"attention": [], "moe": []}
    for l in range(len(model.model.layers)):
        for key, x, y in (("attention", "Xa", "a"), ("moe", "Xf", "f")):
            stream = cap[(x, l)][0].float().norm(dim=-1).mean(-1)
            r[key].append(round(float((cap[(y, l)][0].float().norm(dim=-1) / stream).median()), 3))
    return r


def run_fp4moe(exe, model_dir, prompt, decode, dtype, out):
    cmd = [exe, "run", "--model", model_dir, "--prompt-ids", ",".join(map(str, prompt)), "--max-new-tokens",
           str(decode), "--dtype", dtype, "--logits-out", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"fp4moe run failed ({r.returncode}): {r.stderr}{r.stdout}")
    t = np_load(out)
    return t["ids"].astype(np.int64), t["logits"].astype(np.float64), r.stdout


def all_bf16(model32):
    """Every parameter in bf16; the rotary inv_freq buffers stay fp32 (RoPE computes its angles
    in fp32 from them; rounding the frequencies themselves to bf16 is not what a bf16 model
    built from its config does)."""
    m = copy.deepcopy(model32).to(torch.bfloat16)
    for (name, b), (_, b32) in zip(m.named_buffers(), model32.named_buffers()):
        if name.endswith("inv_freq"):
            b.data = b32.data.clone()
    return m


def hf_logits(model, ids, n_prompt, device):
    """Prefill of the prompt with a cache, then one decode step per remaining token."""
    model = model.to(device)
    with torch.no_grad():
        x = torch.tensor([ids[:n_prompt]], device=device)
        out = model(input_ids=x, use_cache=True)
        rows = [out.logits[0].float().cpu()]
        past = out.past_key_values
        for t in ids[n_prompt:]:
            out = model(input_ids=torch.tensor([[t]], device=device), past_key_values=past, use_cache=True)
            past = out.past_key_values
            rows.append(out.logits[0].float().cpu())
    model.to("cpu")
    return torch.cat(rows).double().numpy()


def compare(ours, ref, n_prompt):
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    am = ours.argmax(1) == ref.argmax(1)
    diff = np.abs(ours - ref)
    return {
        "positions": int(ours.shape[0]),
        "min_cosine": float(cos.min()),
        "min_cosine_prefill": float(cos[:n_prompt].min()),
        "min_cosine_decode": float(cos[n_prompt:].min()) if ours.shape[0] > n_prompt else None,
        "argmax_mismatches": int((~am).sum()),
        "max_abs_err": float(diff.max()),
        "max_abs_err_prefill": float(diff[:n_prompt].max()),
        "max_abs_err_decode": float(diff[n_prompt:].max()) if ours.shape[0] > n_prompt else None,
        "ref_logit_absmax": float(np.abs(ref).max()),
        "positions_below_0.99999": [int(i) for i in np.nonzero(cos < 0.99999)[0]][:50],
        "cosine_quantiles": {q: float(np.quantile(cos, float(q))) for q in ("0.01", "0.1", "0.5")},
    }


def pow2_global_scales(qdir):
    """Rounds every NVFP4 weight_scale_2 to a power of two (the codes and block scales are kept:
    the checkpoint stays a valid NVFP4 checkpoint). Then e2m1 x e4m3 x weight_scale_2 is exact in
    bf16, so an all-bf16 transformers model holds exactly the weights fp4moe computes with; the
    fp32 comparison covers arbitrary global scales."""
    path = os.path.join(qdir, "model.safetensors")
    q = load_file(path)
    for name, t in q.items():
        if name.endswith(".weight_scale_2"):
            q[name] = torch.full_like(t, 2.0 ** round(math.log2(float(t.float().item()))))
    save_file(q, path, metadata={"format": "pt"})


def dequantize_nvfp4_dir(qdir, src_dir, out_dir):
    """The quantized checkpoint's tensors with every NVFP4 linear dequantized to fp32."""
    q = load_file(os.path.join(qdir, "model.safetensors"))
    out = {}
    n = 0
    for name, t in q.items():
        if name.endswith((".weight_scale", ".weight_scale_2", ".input_scale")):
            continue
        if name.endswith(".weight") and t.dtype == torch.uint8:
            m = name[: -len(".weight")]
            codes = t.numpy()
            lo, hi = codes & 0xF, codes >> 4
            vals = E2M1[np.stack([lo, hi], axis=-1).reshape(codes.shape[0], -1)]
            scale = q[m + ".weight_scale"].float().numpy()
            g = float(q[m + ".weight_scale_2"].float().item())
            w = vals.reshape(vals.shape[0], -1, 16) * scale[:, :, None]
            out[name] = torch.from_numpy((w.reshape(vals.shape[0], -1) * np.float32(g)).astype(np.float32))
            n += 1
        else:
            out[name] = t
    os.makedirs(out_dir, exist_ok=True)
    save_file(out, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(src_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fp4moe", required=True)
    ap.add_argument("--out", default="tools/parity/parity_v4.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompt", type=int, default=320)
    ap.add_argument("--decode", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if a.device == "cpu":
        DeepseekV4TopKRouter.forward = router_forward_lowest_index_ties

    report = {
        "what": "fp4moe DeepSeek-V4 CPU forward vs transformers DeepseekV4ForCausalLM",
        "transformers": transformers.__version__, "torch": torch.__version__, "device": a.device,
        "gpu": torch.cuda.get_device_name(0) if a.device == "cuda" else None, "host": platform.node(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "prompt_tokens": a.prompt,
        "decode_steps": a.decode, "seed": a.seed,
        "targets": {"fp32": "cosine >= 0.99999 per position, same argmax everywhere",
                    "bf16": "cosine >= 0.999 per position"},
        "reference_router_ties": ("lowest expert index (stable sort, the set torch CUDA topk returns)"
                                  if a.device == "cpu" else "torch.topk on the device"),
        "draws": {d: kw for d, kw, _ in DRAWS} | {"see": "redraw() and the module docstring"},
        "runs": [],
    }
    ok = True
    tmp = tempfile.mkdtemp(prefix="parity_v4_")
    for (ci, cname), (draw, draw_kw, dtypes) in itertools.product(enumerate(a.configs.split(",")), DRAWS):
        cfg = make_config(CONFIGS[cname])
        gen = torch.Generator().manual_seed(a.seed + ci)
        model = DeepseekV4ForCausalLM(cfg).eval()
        redraw(model, cfg, gen, **draw_kw)
        cname = cname if draw == "trained" else f"{cname}/{draw}"
        bdir = os.path.join(tmp, cname.replace("/", "-") + "-bf16")
        model.to(torch.bfloat16).save_pretrained(bdir)
        model.float()
        qdir, ddir = (os.path.join(tmp, cname.replace("/", "-") + sfx) for sfx in ("-nvfp4", "-nvfp4-deq"))
        r = subprocess.run([a.fp4moe, "quantize", bdir, qdir, "--scheme", "nvfp4"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"fp4moe quantize failed: {r.stderr}{r.stdout}")
        pow2_global_scales(qdir)
        n_deq = dequantize_nvfp4_dir(qdir, bdir, ddir)
        prompt = torch.randint(0, cfg.vocab_size, (a.prompt,), generator=gen).tolist()
        for weights, mdir in (("bf16", bdir), ("nvfp4", qdir)):
            # From the saved files, as a user would load them (the in-memory model's rotary
            # buffers went through bf16 when it was saved).
            ref32 = DeepseekV4ForCausalLM.from_pretrained(bdir if weights == "bf16" else ddir,
                                                          dtype=torch.float32).eval()
            ratios = update_ratios(ref32, prompt)
            print(f"{cname:18s} weights={weights:5s} block update / residual stream (median per layer): "
                  f"attention {ratios['attention']}, moe {ratios['moe']}", flush=True)
            for dtype in dtypes:
                t0 = time.time()
                ids, ours, stdout = run_fp4moe(a.fp4moe, mdir, prompt, a.decode, dtype,
                                               os.path.join(tmp, f"{cname.replace('/', '-')}-{weights}-{dtype}.safetensors"))
                ref_model = ref32 if dtype == "fp32" else all_bf16(ref32)
                ref = hf_logits(ref_model, ids.tolist(), a.prompt, a.device)
                c = compare(ours, ref, a.prompt)
                if dtype == "bf16":  # how far bf16 rounding alone moves transformers itself
                    floor = compare(ref, hf_logits(ref32, ids.tolist(), a.prompt, a.device), a.prompt)
                    c["noise_floor_transformers_bf16_vs_fp32"] = {k: floor[k] for k in ("min_cosine", "cosine_quantiles", "max_abs_err")}
                target = 0.99999 if dtype == "fp32" else 0.999
                passed = c["min_cosine"] >= target and (dtype != "fp32" or c["argmax_mismatches"] == 0)
                ok &= passed
                c.update({"config": cname, "draw": draw, "layer_types": cfg.layer_types, "mlp_layer_types": cfg.mlp_layer_types,
                          "weights": weights, "dtype": dtype, "passed": bool(passed), "seconds": round(time.time() - t0, 1),
                          "update_ratio": ratios})
                if weights == "nvfp4":
                    c["nvfp4_linears_dequantized_for_transformers"] = n_deq
                c["fp4moe_tokens_per_s"] = [l for l in stdout.splitlines() if l.startswith("prefill:")][0]
                report["runs"].append(c)
                print(f"{cname:18s} weights={weights:5s} dtype={dtype}: min cos {c['min_cosine']:.7f} "
                      f"(prefill {c['min_cosine_prefill']:.7f}, decode {c['min_cosine_decode']:.7f}), "
                      f"max|err| {c['max_abs_err']:.3e} (logits up to {c['ref_logit_absmax']:.1f}), "
                      f"argmax mismatches {c['argmax_mismatches']}/{c['positions']} -> {'PASS' if passed else 'FAIL'}"
                      + (f" (noise floor: transformers bf16 vs fp32 min cos "
                         f"{c['noise_floor_transformers_bf16_vs_fp32']['min_cosine']:.5f})" if dtype == "bf16" else ""),
                      flush=True)
    report["passed"] = bool(ok)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    print("PASSED" if ok else "FAILED", "->", a.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
