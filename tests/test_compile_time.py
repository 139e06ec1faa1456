"""The compile benchmark's counts, on a hand-written optimised HLO module."""

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
