"""The OEE arithmetic alone (pure logic); the job test runs the same cases through Flink."""

from __future__ import annotations

from jobs.oee.timeline import Master, Timeline, result

MASTER = Master(ideal_cycle_time_s=2.0, state_codes={"1": "RUNNING", "3": "UNPLANNED_STOP",
                                                     "5": "PLANNED_STOP"})
T = 36_000_000  # 10:00:00 in ms since midnight; any multiple of 60 s works


def feed(events: list[tuple[float, str, float | None, str]], *, until_s: float = 60,
         stale_after_s: float = 120) -> list[dict]:
    tl = Timeline(window_ms=60_000, stale_after_ms=int(stale_after_s * 1000))
    out = []
    for sec, tag, value, quality in sorted(events, key=lambda e: e[0]):
        t = T + int(sec * 1000)
        out += [result(w, 60_000, MASTER) for w in tl.close_until(t)]
        tl.apply(MASTER, t, tag, value, None, quality)
    out += [result(w, 60_000, MASTER) for w in tl.close_until(T + int(until_s * 1000))]
    return out


def test_worked_example_from_design() -> None:
    windows = feed([
        (-30, "state", 1, "GOOD"), (0, "count_total", 1000, "GOOD"),
        (0, "count_good", 500, "GOOD"), (40, "state", 3, "GOOD"), (50, "state", 1, "GOOD"),
        (59.9, "count_total", 1024, "GOOD"), (59.9, "count_good", 522, "GOOD"),
    ], until_s=60)
    w = windows[-1]
    assert (w["window_start"], w["planned_s"], w["run_s"], w["unplanned_stop_s"]) == (
        T, 60.0, 50.0, 10.0)
    assert (w["total_count"], w["good_count"]) == (24, 22)
    assert round(w["availability"], 4) == 0.8333
    assert round(w["performance"], 4) == 0.96
    assert round(w["quality"], 4) == 0.9167
    assert round(w["oee"], 4) == 0.7333


def test_counter_reset_counts_from_zero() -> None:
    w = feed([(0, "state", 1, "GOOD"), (1, "count_total", 998, "GOOD"),
              (20, "count_total", 1000, "GOOD"), (30, "count_total", 3, "GOOD"),
              (50, "count_total", 5, "GOOD")])[-1]
    assert w["total_count"] == 2 + 3 + 2


def test_gap_without_good_data_is_unknown_not_downtime() -> None:
    w = feed([(0, "state", 1, "GOOD"), (10, "temperature", 40, "BAD")], stale_after_s=20)[-1]
    assert (w["run_s"], w["unknown_s"], w["unplanned_stop_s"], w["planned_s"]) == (
        20.0, 40.0, 0.0, 20.0)


def test_planned_stop_is_not_planned_time() -> None:
    w = feed([(0, "state", 5, "GOOD"), (15, "state", 1, "GOOD")], stale_after_s=600)[-1]
    assert (w["planned_stop_s"], w["planned_s"], w["run_s"], w["availability"]) == (
        15.0, 45.0, 45.0, 1.0)


def test_first_window_is_unknown_before_the_first_reading() -> None:
    first = feed([(-30, "state", 1, "GOOD"), (0, "state", 3, "GOOD")], until_s=60)[0]
    assert (first["unknown_s"], first["run_s"], first["planned_s"]) == (30.0, 30.0, 30.0)


def test_running_and_making_nothing_is_oee_zero_not_null() -> None:
    # quality is 0/0 (undefined), but OEE = good x ideal cycle time / planned = 0
    w = feed([(0, "state", 1, "GOOD"), (0, "count_total", 7, "GOOD"), (0, "count_good", 7, "GOOD"),
              (50, "count_total", 7, "GOOD"), (50, "count_good", 7, "GOOD")])[-1]
    assert (w["run_s"], w["total_count"], w["good_count"]) == (60.0, 0, 0)
    assert (w["availability"], w["performance"], w["quality"], w["oee"]) == (1.0, 0.0, None, 0.0)


def test_durations_are_exact_in_integer_milliseconds() -> None:
    # 60.0 - 2.401 is not 57.599 in binary floating point: planned time is computed in ms
    w = feed([(2.401, "state", 1, "GOOD")])[-1]
    assert (w["unknown_s"], w["run_s"], w["planned_s"]) == (2.401, 57.599, 57.599)
    assert w["availability"] == 1.0


def test_oee_equals_good_times_cycle_time_over_planned() -> None:
    w = feed([(-30, "state", 1, "GOOD"), (0, "count_total", 1000, "GOOD"),
              (0, "count_good", 500, "GOOD"), (40, "state", 3, "GOOD"), (50, "state", 1, "GOOD"),
              (59.9, "count_total", 1024, "GOOD"), (59.9, "count_good", 522, "GOOD")])[-1]
    assert w["oee"] == 22 * 2.0 / 60.0
