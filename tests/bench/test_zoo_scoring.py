"""bench/zoo.py's top-box agreement for YOLOv8 outputs, on hand-made arrays whose answer is known."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def zoo():
    sys.path.insert(0, str(BENCH))  # zoo imports accuracy beside it (numpy only at import time)
    try:
        spec = importlib.util.spec_from_file_location("zoo", BENCH / "zoo.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def yolo(boxes, scores) -> np.ndarray:
    """One image's YOLOv8 output [1, 4 + C, N] from boxes [N, 4] (cx, cy, w, h) and scores [N, C]."""
    return np.concatenate([np.asarray(boxes, float).T, np.asarray(scores, float).T])[None]


# three boxes, two classes; box 1 (class 1, score 0.9) is the top box
BOXES = [[10, 10, 4, 4], [50, 50, 20, 20], [80, 20, 10, 10]]
SCORES = [[0.3, 0.1], [0.2, 0.9], [0.6, 0.05]]


def test_top_boxes_picks_the_best_class_score_over_all_boxes(zoo):
    corners, cls, score = zoo.top_boxes(yolo(BOXES, SCORES))
    np.testing.assert_allclose(corners, [[40, 40, 60, 60]])
    assert cls.tolist() == [1] and score.tolist() == [0.9]


def test_box_iou_known_values(zoo):
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 0, 0]], float)
    b = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [5, 5, 6, 6], [0, 0, 0, 0]], float)
    np.testing.assert_allclose(zoo.box_iou(a, b), [1.0, 2 / 6, 0.0, 0.0])  # empty boxes: 0, not NaN


def test_top_box_agreement_cases(zoo):
    ref = yolo(BOXES, SCORES)
    # same top box, slightly moved (IoU 0.82) and a lower score: agrees
    moved = yolo([BOXES[0], [52, 50, 20, 20], BOXES[2]], [SCORES[0], [0.2, 0.7], SCORES[2]])
    # the same box wins but with the other class: disagrees
    other_class = yolo(BOXES, [SCORES[0], [0.95, 0.2], SCORES[2]])
    # another box wins (box 2, class 0, no overlap): disagrees
    other_box = yolo(BOXES, [SCORES[0], [0.2, 0.5], SCORES[2]])
    # same class, shifted by half its width (IoU 1/3 < 0.5): disagrees
    shifted = yolo([BOXES[0], [60, 50, 20, 20], BOXES[2]], SCORES)
    test = np.concatenate([ref, moved, other_class, other_box, shifted])
    refs = np.concatenate([ref] * 5)
    assert zoo.top_box_agreement(refs, test).tolist() == [True, True, False, False, False]
    assert zoo.top_box_agreement(refs, test, iou=0.3).tolist() == [True, True, False, False, True]


def test_top_boxes_rejects_a_wrong_layout(zoo):
    with pytest.raises(ValueError, match="4 \\+ classes"):
        zoo.top_boxes(np.zeros((1, 4, 10)))


def test_part_sqnr_separates_boxes_from_scores(zoo):
    ref = yolo(BOXES, SCORES)
    test = ref.copy()
    test[:, 4:] *= 0.5           # scores halved: noise = signal / 2, SQNR 20 log10(2)
    boxes_db, scores_db = zoo.part_sqnr(ref, test)
    assert boxes_db == float("inf")
    assert scores_db == pytest.approx(20 * np.log10(2))
    assert zoo.sqnr_db(ref, test) > 40  # the whole output's SQNR hides the halved scores
