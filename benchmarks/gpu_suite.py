r"""Every GPU measurement in one prepared run, and the docs/speed.md section it writes.

  python benchmarks/gpu_suite.py measure --out=OUT        # on the GPU machine
  python benchmarks/gpu_suite.py render --out=OUT --doc=docs/speed.md --section=gpu

``measure`` runs, each in its own process under one overall deadline (GPU
time is scarce; a part that fails or runs out of time leaves the others'
results): train_step.py in float32 with the eager PyTorch twin on CUDA,
train_step.py in bfloat16, then scaling.py.  Each writes JSON under OUT,
with its log beside it.  ``render`` turns OUT's JSON into the markdown
section, anywhere, so the table is written by code from what was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, argv after the script, the most seconds it may take)
PARTS = (
    ("step_f32", ["benchmarks/train_step.py", "--steps=60", "--windows=6",
                  "--skip_memory", "--compute_dtype=float32"], 200),
    ("step_bf16", ["benchmarks/train_step.py", "--steps=60", "--windows=6",
                   "--skip_memory", "--skip_torch", "--fed_steps=0",
                   "--compute_dtype=bfloat16"], 150),
    # On an H200 the plain step compiled in 94 s against the fused step's
    # 20 s, so the GPU grid times the fused step alone.  (Compiling the grid
    # 12 at a time did not help: XLA's autotuners then share the GPU, and
    # none of the 12 had finished after 150 s.)
    ("scaling", ["benchmarks/scaling.py", "--batches=32,64,128,256",
                 "--frames=160,300,800", "--steps=12", "--windows=3", "--no_plain"],
     400),
)


def _versions() -> dict:
    out = {}
    for name in ("jax", "jaxlib", "flax", "optax", "torch", "numpy"):
        try:
            out[name] = __import__(name).__version__
        except Exception as error:  # a missing package is a finding, not a crash
            out[name] = f"unavailable ({type(error).__name__})"
    try:
        out["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
             "--format=csv,noheader"], capture_output=True, text=True,
            timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        out["nvidia_smi"] = f"unavailable ({error})"
    return out


def measure(out: str, deadline_s: float, parts=None) -> dict:
    """Runs ``parts`` (default: all) into ``out``; a suite.json already there
    keeps the other parts' entries, so a part can be rerun on its own."""
    os.makedirs(out, exist_ok=True)
    start = time.monotonic()
    suite = _load(out, "suite") or {"parts": {}}
    suite["versions"] = _versions()
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               # JAX and the PyTorch twin share the GPU in the f32 process.
               XLA_PYTHON_CLIENT_MEM_FRACTION="0.6")
    for name, argv, cap_s in PARTS:
        if parts and name not in parts:
            continue
        left = deadline_s - (time.monotonic() - start)
        if left < 30:
            suite["parts"][name] = {"status": "skipped: deadline"}
            continue
        json_path = os.path.join(out, f"{name}.json")
        cmd = [sys.executable, *argv, f"--json_out={json_path}"]
        began = time.monotonic()
        with open(os.path.join(out, f"{name}.log"), "w") as log:
            try:
                rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log,
                                    stderr=subprocess.STDOUT,
                                    timeout=min(cap_s, left)).returncode
                status = "ok" if rc == 0 else f"failed: exit {rc}"
            except subprocess.TimeoutExpired:
                status = f"stopped after {min(cap_s, left):.0f} s"
        suite["parts"][name] = {"status": status, "command": " ".join(argv),
                                "wall_s": time.monotonic() - began}
        print(f"{name}: {status} in {suite['parts'][name]['wall_s']:.0f} s", flush=True)
        with open(os.path.join(out, "suite.json"), "w") as f:
            json.dump(suite, f, indent=1)
    return suite


# ----------------------------------------------------------------------------
# Rendering.


def _load(out: str, name: str) -> dict | None:
    path = os.path.join(out, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _step_rows(step: dict) -> list[str]:
    """Table rows of one train_step.py run: its JAX steps (and the twin)."""
    rows, dtype, B = [], step["compute_dtype"], step["batch_size_per_stream"]
    roof = step["roofline"]["roofline"]
    for name, key in (("JAX fused Emo-DNA step", "fused"), ("JAX plain CE step", "plain")):
        t = step["timing"][f"jax {'fused' if key == 'fused' else 'plain CE'}"]
        flops, nbytes = step["flops_per_step"][key], step["bytes_per_step"][key]
        share = (f"{100 * roof['share']:.1f}% ({roof['bound']}-bound)"
                 if key == "fused" else "")
        rows.append(f"| {name} | {dtype} | {1e3 * t['median_s']:.2f} | "
                    f"{2 * B / t['median_s']:,.0f} | {flops / 1e9:.2f} | "
                    f"{nbytes / 1e9:.2f} | {flops / t['median_s'] / 1e12:.2f} | "
                    f"{share} | {step['compile_s'][key]:.1f} |")
    if "torch eager" in step["timing"]:
        t, info = step["timing"]["torch eager"], step["torch"]
        tf32 = info.get("tf32", {})
        mode = "float32" + (" (TF32 convolutions)" if tf32.get("cudnn") else "")
        rows.append(f"| PyTorch {info['version']} eager twin | {mode} | "
                    f"{1e3 * t['median_s']:.2f} | {2 * B / t['median_s']:,.0f} | "
                    "| | | | |")
    return rows


def render(out: str) -> str:
    """The GPU section: the step table, the ratios and the scaling table."""
    from benchmarks import scaling

    suite = _load(out, "suite") or {"versions": {}, "parts": {}}
    steps = [s for s in (_load(out, "step_f32"), _load(out, "step_bf16"))
             if s and "roofline" in s]
    if not steps:
        raise SystemExit(f"{out}: no GPU train_step.py results (step_f32.json / "
                         "step_bf16.json with a 'roofline' entry)")
    v = suite["versions"]
    first = steps[0]
    lines = ["Reproduce: `python benchmarks/gpu_suite.py measure --out=OUT`, then "
             "`python benchmarks/gpu_suite.py render --out=OUT --doc=docs/speed.md "
             "--section=gpu`.", "",
             f"{first['num_devices']} x {first['device_kind']} "
             f"({v.get('nvidia_smi', 'nvidia-smi unavailable')}); jax "
             f"{v.get('jax', '?')}, flax {v.get('flax', '?')}, PyTorch "
             f"{v.get('torch', '?')}; {first['cpu_count']} host CPUs.", ""]
    ceilings = "; ".join(
        f"{s['roofline']['ceilings']['dtype']} matmul {s['roofline']['ceilings']['matmul_tflops']:.3g} "
        f"TFLOP/s" for s in steps)
    lines += [f"Ceilings measured through XLA in the same runs: {ceilings}; "
              f"elementwise {steps[0]['roofline']['ceilings']['bandwidth_tbps']:.3g} TB/s "
              "(bytes read + written). The roofline floor of a step is the larger "
              "of its FLOPs over the matmul rate and its bytes over the bandwidth; "
              "both counts are XLA's cost analysis of the compiled step, whose "
              "bytes are each fused kernel's operands and results (cache hits "
              "count as traffic).", "",
              f"Default config, {first['batch_size_per_stream']} source + "
              f"{first['batch_size_per_stream']} target utterances of "
              f"{first['num_frames']} frames per step; median of interleaved windows.",
              "", "| step | compute | median ms | samples/s | GFLOP | GB accessed | "
              "TFLOP/s | share of roofline | compile (s) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in steps:
        lines += _step_rows(s)
    lines.append("")
    f32 = next((s for s in steps if s["compute_dtype"] == "float32"), None)
    if f32 and "torch_over_jax" in f32.get("summary", {}):
        lines.append(f"- eager PyTorch twin / JAX fused step, float32: "
                     f"{f32['summary']['torch_over_jax']:.2f}x (best windows "
                     f"{f32['summary']['torch_over_jax_best']:.2f}x).")
    bf16 = next((s for s in steps if s["compute_dtype"] == "bfloat16"), None)
    if f32 and bf16:
        ratio = (f32["timing"]["jax fused"]["median_s"]
                 / bf16["timing"]["jax fused"]["median_s"])
        lines.append(f"- bfloat16 / float32 fused step speed: {ratio:.2f}x.")
    if f32 and "fed" in f32:
        lines.append(f"- fused step fed by the input pipeline / on prefetched "
                     f"batches: {f32['summary']['fed_over_prefetched']:.2f}x.")
    for s in steps:
        # (Older runs read the peak after the ceilings' 5 GiB of buffers:
        # only the key written before them is shown.)
        peak = s["roofline"].get("step_peak_bytes_in_use")
        if peak:
            lines.append(f"- device memory in use at peak ({s['compute_dtype']} "
                         f"process, all steps it compiled and ran): "
                         f"{peak / 2**30:.2f} GiB.")
    scaling_results = _load(out, "scaling")
    if scaling_results and scaling_results.get("rows"):
        status = suite["parts"].get("scaling", {}).get("status", "ok")
        lines += ["", "Scaling on the same device (float32):", "",
                  scaling.table(scaling_results).rstrip("\n")]
        if status != "ok":
            lines.append(f"\n(The scaling run {status}: the rows above are those it "
                         "finished.)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("measure", "render"))
    parser.add_argument("--out", required=True, help="JSON and logs go (or are) here.")
    parser.add_argument("--deadline_s", type=float, default=520,
                        help="measure: the whole suite's time limit")
    parser.add_argument("--parts", default="",
                        help="measure: comma-separated subset of " +
                             ",".join(name for name, _, _ in PARTS))
    parser.add_argument("--doc", default=None, help="render: write into this file")
    parser.add_argument("--section", default="gpu")
    args = parser.parse_args(argv)
    if args.mode == "measure":
        parts = [p for p in args.parts.split(",") if p]
        unknown = sorted(set(parts) - {name for name, _, _ in PARTS})
        if unknown:
            parser.error(f"--parts: unknown {unknown}")
        suite = measure(args.out, args.deadline_s, parts)
        return 0 if all(p["status"] == "ok" for p in suite["parts"].values()) else 1
    text = render(args.out)
    print(text)
    if args.doc:
        from benchmarks import cross_corpus
        cross_corpus.write_section(args.doc, text, args.section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
