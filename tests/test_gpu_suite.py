"""The roofline arithmetic and the GPU section's rendering (benchmarks/)."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from benchmarks import gpu_suite, roofline, scaling, train_step  # noqa: E402


def test_share_is_the_larger_floor_over_the_step_time():
    ceilings = {"matmul_tflops": 100.0, "bandwidth_tbps": 1.0}
    # 1e12 FLOP at 100 TFLOP/s: 10 ms; 1e9 bytes at 1 TB/s: 1 ms.
    out = roofline.share(1e12, 1e9, 0.02, ceilings)
    assert out["bound"] == "compute"
    assert out["floor_s"] == pytest.approx(0.01)
    assert out["share"] == pytest.approx(0.5)
    assert out["intensity_flop_per_byte"] == pytest.approx(1000.0)
    out = roofline.share(1e9, 4e9, 0.008, ceilings)   # 10 us of math, 4 ms of bytes
    assert (out["bound"], out["share"]) == ("memory", pytest.approx(0.5))


def test_cost_counts_a_matmul_closed_form():
    m, k, n = 64, 32, 48
    compiled = jax.jit(jnp.matmul).lower(
        jnp.ones((m, k)), jnp.ones((k, n))).compile()
    cost = roofline.cost(compiled)
    assert cost["flops"] == pytest.approx(2 * m * k * n, rel=0.05)
    assert cost["bytes"] >= 4 * (m * k + k * n + m * n)   # each operand read once


def test_ceilings_are_finite_rates():
    out = roofline.measure_ceilings("float32", matmul_size=256, copy_mib=8, repeats=2)
    assert out["matmul_tflops"] > 0 and out["bandwidth_tbps"] > 0


def _step(dtype, fused_s, torch_s=None):
    B = 32
    step = {"compute_dtype": dtype, "batch_size_per_stream": B, "num_frames": 160,
            "num_devices": 1, "device_kind": "Test GPU", "cpu_count": 16,
            "timing": {"jax fused": {"median_s": fused_s},
                       "jax plain CE": {"median_s": fused_s / 2}},
            "flops_per_step": {"fused": 3e9, "plain": 2e9},
            "bytes_per_step": {"fused": 1e9, "plain": 1e9},
            "compile_s": {"fused": 20.0, "plain": 90.0},
            "summary": {},
            "roofline": {"ceilings": {"dtype": dtype, "matmul_tflops": 300.0,
                                      "bandwidth_tbps": 3.0},
                         "roofline": roofline.share(3e9, 1e9, fused_s, {
                             "matmul_tflops": 300.0, "bandwidth_tbps": 3.0})}}
    if torch_s:
        step["timing"]["torch eager"] = {"median_s": torch_s}
        step["torch"] = {"version": "9.9", "tf32": {"cudnn": True}}
        step["summary"].update(torch_over_jax=torch_s / fused_s,
                               torch_over_jax_best=torch_s / fused_s)
    return step


def test_render_writes_the_measured_ratios(tmp_path):
    for name, step in (("step_f32", _step("float32", 0.008, torch_s=0.048)),
                       ("step_bf16", _step("bfloat16", 0.004))):
        (tmp_path / f"{name}.json").write_text(json.dumps(step))
    rows = [{"batch": 32, "frames": 160, "fused_s": 0.007, "plain_s": None,
             "compile_s": 20.0, "plan_gib": 0.1, "gflop": 0.4}]
    (tmp_path / "scaling.json").write_text(json.dumps({
        "command": "python benchmarks/scaling.py --no_plain", "rows": rows,
        "machine": {"device_kind": "Test GPU", "num_devices": 1, "backend": "gpu",
                    "cpu_count": 16, "load": 0.5}}))
    text = gpu_suite.render(str(tmp_path))
    assert "eager PyTorch twin / JAX fused step, float32: 6.00x" in text
    assert "bfloat16 / float32 fused step speed: 2.00x" in text
    # 1 GB at 3 TB/s = 0.333 ms floor over an 8 ms step.
    assert "| JAX fused Emo-DNA step | float32 | 8.00 | 8,000 |" in text
    assert "4.2% (memory-bound)" in text
    assert "| 32 | 160 | 7.00 | - | - | 9143 |" in text     # no plain step timed


def test_render_names_the_missing_results(tmp_path):
    with pytest.raises(SystemExit, match="no GPU train_step.py results"):
        gpu_suite.render(str(tmp_path))


def test_measure_rejects_an_unknown_part(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_suite.main(["measure", f"--out={tmp_path}", "--parts=step_f32,nope"])
    assert "--parts: unknown ['nope']" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_scaling_table_shows_the_plain_ratio_when_timed():
    rows = [{"batch": 64, "frames": 300, "fused_s": 0.2, "plain_s": 0.1,
             "compile_s": 9.0, "plan_gib": 0.5, "gflop": 11.5}]
    text = scaling.table({"command": "c", "rows": rows, "machine": {
        "device_kind": "cpu", "num_devices": 1, "backend": "cpu", "cpu_count": 2,
        "load": 1.0}})
    assert "| 64 | 300 | 200 | 100 | 2.00 | 640 | 0.50 | 11.5 | 9.0 |" in text


def test_train_step_table_gives_each_target_its_verdict():
    step = _step("float32", 0.100, torch_s=0.160)
    step.update(backend="cpu", usable_cpus=1, jax_params=71755,
                pipeline={"samples_per_s": 6400.0},
                loadavg_before_timing=[0.2], loadavg_after_timing=[0.4])
    step["timing"]["jax fused"]["samples_per_s"] = 640.0
    step["torch"]["version"] = "9.9"
    step["summary"].update(fused_over_plain=2.0, pipeline_over_step=10.0,
                           fed_over_prefetched=1.05, torch_ratio_reliable=True)
    text = train_step.markdown(step, "python benchmarks/train_step.py")
    assert "| 2.00x (100.0 vs 50.0 ms) | <= 1.3 | **missed** |" in text
    assert "| 10.0x (6,400 vs 640) | >= 3x | ok |" in text
    assert "| 1.05x | <= 1.1x | ok |" in text
    assert "| 1.60x (best windows 1.60x) | >= 1.5x | ok |" in text
    assert "| 20.0 s | <= 5 s | **missed** |" in text
    step["hlo_instructions"] = {"fused": 22295, "plain": 18861}
    text = train_step.markdown(step, "c")
    assert "| 20.0 s (22,295 optimised HLO instructions) | <= 5 s | **missed** |" in text
    assert ("| compile time of the plain cross-entropy step (no Emo-DNA loss) | "
            "90.0 s (18,861 optimised HLO instructions) | - |  |") in text
    step["summary"]["torch_ratio_reliable"] = False
    assert "unreliable: cores oversubscribed" in train_step.markdown(step, "c")
