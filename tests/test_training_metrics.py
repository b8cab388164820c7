"""Detection metrics and thresholds on small arrays whose answers are worked out by hand."""

from __future__ import annotations

import pytest

from training.metrics import (
    detection_metrics,
    event_metrics,
    false_alarm_episodes,
    false_alarms_per_day,
    point_metrics,
    runs,
    settled_far_percent,
)

# index:   0  1  2  3  4  5  6  7  8  9 10 11
LABELS = [0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0]  # events [2, 5) and [7, 9)
FLAGS = [0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 1]  # flagged runs [1, 3), [8, 10), [11, 12)


def test_runs() -> None:
    assert runs(LABELS) == [(2, 5), (7, 9)]
    assert runs(FLAGS) == [(1, 3), (8, 10), (11, 12)]
    assert runs([1, 1, 0, 1]) == [(0, 2), (3, 4)]
    assert runs([0, 0]) == []


def test_point_metrics_by_hand() -> None:
    # TP: 2, 8   FP: 1, 9, 11   FN: 3, 4, 7   TN: 0, 5, 6, 10
    m = point_metrics(LABELS, FLAGS)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 3, 3, 4)
    assert m["precision"] == pytest.approx(2 / 5)
    assert m["recall"] == pytest.approx(2 / 5)
    assert m["f1"] == pytest.approx(0.4)
    assert m["far_percent"] == pytest.approx(100 * 3 / 7)
    assert m["mar_percent"] == pytest.approx(60.0)


def test_event_recall_and_delay_by_hand() -> None:
    # event [2,5): first flag at 2 -> delay 0; event [7,9): first flag at 8 -> delay 1
    m = event_metrics(LABELS, FLAGS, step_seconds=10.0)
    assert m["events"] == 2 and m["events_detected"] == 2 and m["event_recall"] == 1.0
    assert m["mean_detection_delay_steps"] == pytest.approx(0.5)
    assert m["mean_detection_delay_seconds"] == pytest.approx(5.0)


def test_missed_event_lowers_recall_and_is_left_out_of_the_delay() -> None:
    labels = [0, 1, 1, 1, 0, 0, 1, 1, 0]  # events [1,4), [6,8)
    flags = [0, 0, 0, 1, 0, 0, 0, 0, 1]  # detects the first at step 3 only; 8 is after event 2
    m = event_metrics(labels, flags, step_seconds=2.0)
    assert m["events_detected"] == 1 and m["event_recall"] == pytest.approx(0.5)
    assert m["mean_detection_delay_steps"] == pytest.approx(2.0)
    assert m["mean_detection_delay_seconds"] == pytest.approx(4.0)


def test_false_alarms_are_flagged_runs_starting_outside_events() -> None:
    # runs [1,3) starts at a normal step (counts, although it runs into the event),
    # [8,10) starts inside an event (no), [11,12) starts at a normal step (counts)
    assert false_alarm_episodes(LABELS, FLAGS) == 2
    # 12 steps of 10 s = 120 s = 1/720 day -> 2 * 720 per day
    assert false_alarms_per_day(LABELS, FLAGS, 10.0) == pytest.approx(1440.0)


def test_settled_far_leaves_out_the_steps_right_after_each_event() -> None:
    # normal points 0 1 5 6 9 10 11; FPs at 1, 9, 11
    assert settled_far_percent(LABELS, FLAGS, 0) == pytest.approx(100 * 3 / 7)
    # settle 1 drops 5 and 9 -> FPs 1, 11 of 0 1 6 10 11
    assert settled_far_percent(LABELS, FLAGS, 1) == pytest.approx(40.0)
    # settle 2 drops 5 6 9 10 -> FPs 1, 11 of 0 1 11
    assert settled_far_percent(LABELS, FLAGS, 2) == pytest.approx(200 / 3)
    m = detection_metrics(LABELS, FLAGS, step_seconds=1.0, settle_steps=1)
    assert m["far_settled_percent"] == pytest.approx(40.0)


def test_a_detector_that_never_flags() -> None:
    m = detection_metrics(LABELS, [0] * 12, step_seconds=1.0)
    assert m["precision"] is None  # nothing flagged: undefined, not 0
    assert m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["far_percent"] == 0.0 and m["mar_percent"] == 100.0
    assert m["event_recall"] == 0.0 and m["mean_detection_delay_steps"] is None
    assert m["false_alarms_per_day"] == 0.0
    assert m["points"] == 12 and m["anomalous_points"] == 5


def test_all_normal_data_has_undefined_recall() -> None:
    m = detection_metrics([0, 0, 0, 0], [0, 1, 1, 0], step_seconds=86400.0 / 4)
    assert m["recall"] is None and m["mar_percent"] is None and m["event_recall"] is None
    assert m["precision"] == 0.0 and m["f1"] == 0.0
    assert m["far_percent"] == pytest.approx(50.0)
    assert m["false_alarms_per_day"] == pytest.approx(1.0)  # one episode in exactly one day


def test_perfect_detector() -> None:
    m = detection_metrics(LABELS, LABELS, step_seconds=1.0)
    assert m["f1"] == 1.0 and m["far_percent"] == 0.0 and m["mar_percent"] == 0.0
    assert m["event_recall"] == 1.0 and m["mean_detection_delay_steps"] == 0.0
    assert m["false_alarm_episodes"] == 0


def test_misaligned_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        point_metrics([0, 1, 0], [0, 1])


# --- thresholds ------------------------------------------------------------------------------
