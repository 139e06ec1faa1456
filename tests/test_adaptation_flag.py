"""benchmarks/adaptation_flag.py: which predictions are flagged, and its
table's pooled accuracies, hand-worked."""

import numpy as np

from benchmarks import adaptation_flag
from emodna_jax import serving

CLASSES = ["neutral", "angry", "happy", "sad"]
ANGRY_AS_HAPPY = {"adapted": True, "why": "contradicted", "unadapted": ["angry"],
                  "not_told_apart": [["angry", "happy"]]}


def test_predictions_of_an_unadapted_pair_or_an_unadapted_model_are_flagged():
    predicted = np.array([0, 1, 2, 3, 2])
    np.testing.assert_array_equal(adaptation_flag.flagged(ANGRY_AS_HAPPY, CLASSES, predicted),
                                  [False, True, True, False, True])
    everything = dict(ANGRY_AS_HAPPY, unadapted=[], not_told_apart=[])
    assert not adaptation_flag.flagged(everything, CLASSES, predicted).any()
    assert adaptation_flag.flagged(dict(everything, adapted=False), CLASSES, predicted).all()
    assert [serving.emotion_adapted(None, c) for c in CLASSES] == [None] * 4


def test_the_table_pools_the_seeds_of_a_task_and_of_a_group():
    def run(flagged, flagged_right, others, others_right):
        return {"runs": 1, "with_flag": int(flagged > 0), "flagged": flagged,
                "flagged_right": flagged_right, "others": others,
                "others_right": others_right}
    counts = {"hi_festival:en_phone": [run(30, 6, 90, 60), run(0, 0, 120, 50)],
              "en_phone:hi_festival": [run(0, 0, 120, 40)],
              "it_festival:en_flite": [run(10, 9, 110, 100)]}
    text = adaptation_flag.markdown(counts, list(counts), "emodna", [0, 1], "c")
    # 30 of 240 flagged, 6 right; 60 + 50 of 210 others right.
    assert "| hi_festival → en_phone | 1/2 | 0.125 | 0.200 (30) | 0.524 (210) |" in text
    assert "| en_phone → hi_festival | 0/1 | 0.000 | - (0) | 0.333 (120) |" in text
    # A row per group: the swapped pair pools its three runs.
    assert "| **swapped pair** | 1/3 | 0.083 | 0.200 (30) | 0.455 (330) |" in text
    assert "| **development suite** | 1/1 | 0.083 | 0.900 (10) | 0.909 (110) |" in text
    one_group = adaptation_flag.markdown({"en_phone:hi_festival": [run(0, 0, 120, 40)]},
                                         ["en_phone:hi_festival"], "emodna", [0], "c")
    assert "| **every task** | 0/1 | 0.000 | - (0) | 0.333 (120) |" in one_group
