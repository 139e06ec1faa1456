"""The compile benchmark's counts, on a hand-written optimised HLO module,
and its table and flags."""

import pytest

from benchmarks import compile_time

# Two fusions that differ only in names and metadata (one kernel), one that
# adds instead of multiplying (a second kernel), and a computation no fusion
# calls (not a kernel).
HLO = """HloModule jit_step, entry_computation_layout={(f32[4]{0})->f32[4]{0}}

%fused_computation (param_0.1: f32[4]) -> f32[4] {
  %param_0.1 = f32[4]{0} parameter(0)
  ROOT %multiply.1 = f32[4]{0} multiply(%param_0.1, %param_0.1), metadata={op_name="a"}
}

%fused_computation.1 (param_0.7: f32[4]) -> f32[4] {
  %param_0.7 = f32[4]{0} parameter(0)
  ROOT %multiply.9 = f32[4]{0} multiply(%param_0.7, %param_0.7), metadata={op_name="b" stack_frame_id=3}
}

%fused_computation.2 (param_0.8: f32[4]) -> f32[4] {
  %param_0.8 = f32[4]{0} parameter(0)
  ROOT %add.2 = f32[4]{0} add(%param_0.8, %param_0.8)
}

%region_0.3 (Arg_0.4: f32[], Arg_1.5: f32[]) -> f32[] {
  %Arg_0.4 = f32[] parameter(0)
  %Arg_1.5 = f32[] parameter(1)
  ROOT %add.6 = f32[] add(%Arg_0.4, %Arg_1.5)
}

ENTRY %main.10 (x.1: f32[4]) -> f32[4] {
  %x.1 = f32[4]{0} parameter(0)
  %a = f32[4]{0} fusion(%x.1), kind=kLoop, calls=%fused_computation
  %b = f32[4]{0} fusion(%a), kind=kLoop, calls=%fused_computation.1
  ROOT %c = f32[4]{0} fusion(%b), kind=kLoop, calls=%fused_computation.2
}
"""


def test_distinct_kernels_set_names_and_metadata_aside():
    assert compile_time.distinct_kernels(HLO) == 2


def test_instructions_are_counted_in_every_computation():
    # 2 + 2 + 2 in the fusions, 3 in the region, 4 in the entry.
    assert compile_time.hlo_instructions(HLO) == 13


def test_variants_split_at_the_first_equals_and_reject_what_is_not_flags():
    assert compile_time.variants(["level 1=--xla_backend_optimization_level=1 --x=2"]) == [
        ("level 1", "--xla_backend_optimization_level=1 --x=2")]
    for bad in ("no flags", "=--a=1", "name=xla_a=1"):
        with pytest.raises(ValueError, match="--variant=.*NAME=--xla_flag"):
            compile_time.variants([bad])


def test_table_gives_medians_of_compiles_and_of_every_timed_step():
    runs = {"this checkout": [dict(compile_s=6.0, step_s=[0.060, 0.070],
                                   hlo_instructions=13, distinct_kernels=2),
                              dict(compile_s=8.0, step_s=[0.080, 0.090],
                                   hlo_instructions=13, distinct_kernels=2),
                              dict(compile_s=7.0, step_s=[0.065], hlo_instructions=13,
                                   distinct_kernels=2)],
            "level 1": [dict(compile_s=5.0, step_s=[0.1], hlo_instructions=11,
                             distinct_kernels=1)]}
    flags = {"this checkout": "", "level 1": "--xla_backend_optimization_level=1"}
    rows = compile_time.table(runs, flags, repeats=3).splitlines()[-2:]
    # Steps pooled over runs: 60, 65, 70, 80, 90 ms -> 70.
    assert rows[0] == "| this checkout | - | 7.00 | 6.00, 8.00, 7.00 | 70.0 | 13 | 2 |"
    assert rows[1] == ("| level 1 | `--xla_backend_optimization_level=1` | 5.00 | 5.00 "
                       "| 100.0 | 11 | 1 |")
