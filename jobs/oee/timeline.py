"""OEE of one asset from its readings, processed in event-time order (pure logic, no Flink).

DESIGN.md's definition, per asset and tumbling window:
- machine state comes from the asset's state tag, mapped to RUNNING / UNPLANNED_STOP /
  PLANNED_STOP by the asset's master data; a state lasts from its sample until the next state
  sample, split at window boundaries;
- time with no recent GOOD reading of the asset (any tag) is UNKNOWN, as is time after a BAD
  state sample or a state code the master data does not map;
- planned = window - planned stop - unknown; run = RUNNING time;
- counts are deltas of monotonic counters; a counter that goes down was reset (the delta is
  then the new value: counted up from zero);
- availability = run / planned, performance = ideal_cycle_time * total / run,
  quality = good / total, OEE = A * P * Q.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RUNNING = "RUNNING"
UNPLANNED_STOP = "UNPLANNED_STOP"
PLANNED_STOP = "PLANNED_STOP"
UNKNOWN = "UNKNOWN"
CATEGORIES = (RUNNING, UNPLANNED_STOP, PLANNED_STOP)


@dataclass
class Master:
    """What the OEE job needs of an asset's master data (iiot.assets)."""

    ideal_cycle_time_s: float | None = None
    state_tag: str = "state"
    total_count_tag: str = "count_total"
    good_count_tag: str = "count_good"
    state_codes: dict[str, str] = field(default_factory=dict)


@dataclass
class WindowAcc:
    start_ms: int
    durations_ms: dict[str, int] = field(
        default_factory=lambda: {RUNNING: 0, UNPLANNED_STOP: 0, PLANNED_STOP: 0, UNKNOWN: 0}
    )
    total: int = 0
    good: int = 0


@dataclass
class Timeline:
    """The running state of one asset; `cursor_ms` is how far time has been attributed."""

    window_ms: int
    stale_after_ms: int
    cursor_ms: int | None = None
    category: str = UNKNOWN
    live_until_ms: int = 0
    last_counter: dict[str, float] = field(default_factory=dict)
    windows: dict[int, WindowAcc] = field(default_factory=dict)

    # -- feeding ---------------------------------------------------------------------------
    def advance_to(self, t_ms: int) -> None:
        """Attribute [cursor, t) to the current category (UNKNOWN past the liveness horizon)."""
        if self.cursor_ms is None:
            # the first window of an asset is UNKNOWN up to its first reading
            start = t_ms - t_ms % self.window_ms
            self._attribute(start, t_ms, UNKNOWN)
            self.cursor_ms = t_ms
            self._window(t_ms)
            return
        if t_ms <= self.cursor_ms:
            return
        known_end = min(t_ms, max(self.cursor_ms, self.live_until_ms))
        self._attribute(self.cursor_ms, known_end, self.category)
        self._attribute(known_end, t_ms, UNKNOWN)
        self.cursor_ms = t_ms

    def apply(self, master: Master, t_ms: int, tag: str, value: float | None,
              text: str | None, quality: str) -> None:
        """One reading at t (call advance_to(t) first)."""
        good = quality == "GOOD"
        self._window(t_ms)
        if good:
            self.live_until_ms = max(self.live_until_ms, t_ms + self.stale_after_ms)
        if tag == master.state_tag:
            code = text if text is not None else _code(value)
            self.category = master.state_codes.get(code, UNKNOWN) if good and code else UNKNOWN
        elif good and value is not None and tag in (master.total_count_tag,
                                                    master.good_count_tag):
            previous = self.last_counter.get(tag)
            self.last_counter[tag] = value
            if previous is not None:
                delta = round(value - previous) if value >= previous else round(value)
                acc = self._window(t_ms)
                if tag == master.total_count_tag:
                    acc.total += delta
                else:
                    acc.good += delta

    def close_until(self, t_ms: int) -> list[WindowAcc]:
        """Advance to t and hand back every window that ends at or before t, oldest first."""
        self.advance_to(t_ms)
        done = sorted(s for s in self.windows if s + self.window_ms <= t_ms)
        return [self.windows.pop(s) for s in done]

    def next_window_end(self) -> int | None:
        """When the earliest open window closes, or None if nothing is open."""
        return min(self.windows) + self.window_ms if self.windows else None

    def wants_next_window(self, window_end_ms: int) -> bool:
        """Whether known time (not just UNKNOWN) reaches into the window after window_end."""
        return self.live_until_ms > window_end_ms

    # -- internals -------------------------------------------------------------------------
    def _window(self, t_ms: int) -> WindowAcc:
        start = t_ms - t_ms % self.window_ms
        acc = self.windows.get(start)
        if acc is None:
            acc = self.windows[start] = WindowAcc(start)
        return acc

    def _attribute(self, a_ms: int, b_ms: int, category: str) -> None:
        while a_ms < b_ms:
            acc = self._window(a_ms)
            end = min(b_ms, acc.start_ms + self.window_ms)
            acc.durations_ms[category] += end - a_ms
            a_ms = end


def _code(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else str(value)


def result(acc: WindowAcc, window_ms: int, master: Master) -> dict[str, Any]:
    """The OeeWindow record of a closed window. Durations are summed in integer ms and
    divided once, so a window's parts add up exactly; OEE is good x ideal cycle time /
    planned (= A x P x Q), which is 0, not undefined, when the machine ran and made nothing."""
    ms = acc.durations_ms
    planned_ms = window_ms - ms[PLANNED_STOP] - ms[UNKNOWN]
    run_ms = ms[RUNNING]
    d = {k: v / 1000.0 for k, v in ms.items()}
    planned = planned_ms / 1000.0
    run = run_ms / 1000.0
    ict = master.ideal_cycle_time_s
    availability = run_ms / planned_ms if planned_ms > 0 else None
    performance = ict * acc.total / run if ict is not None and run_ms > 0 else None
    quality = acc.good / acc.total if acc.total > 0 else None
    oee = ict * acc.good / planned if ict is not None and planned_ms > 0 else None
    return {
        "window_start": acc.start_ms,
        "window_end": acc.start_ms + window_ms,
        "planned_s": planned,
        "run_s": run,
        "unplanned_stop_s": d[UNPLANNED_STOP],
        "planned_stop_s": d[PLANNED_STOP],
        "unknown_s": d[UNKNOWN],
        "total_count": acc.total,
        "good_count": acc.good,
        "ideal_cycle_time_s": ict,
        "availability": availability,
        "performance": performance,
        "quality": quality,
        "oee": oee,
    }


def replay(
    readings: list[tuple[int, str, float | None, str | None, str]],
    master: Master,
    *,
    window_ms: int,
    stale_after_ms: int,
    until_ms: int,
) -> list[dict[str, Any]]:
    """Batch OEE of one asset: (t_ms, tag, value, text, quality) readings in any order, every
    window that closes by until_ms. What the streaming job emits for the same input."""
    timeline = Timeline(window_ms=window_ms, stale_after_ms=stale_after_ms)
    out: list[dict[str, Any]] = []
    for t_ms, tag, value, text, quality in sorted(readings, key=lambda r: r[0]):
        out += [result(w, window_ms, master) for w in timeline.close_until(t_ms)]
        timeline.apply(master, t_ms, tag, value, text, quality)
    end = timeline.next_window_end()
    while end is not None and end <= until_ms:
        out += [result(w, window_ms, master) for w in timeline.close_until(end)]
        end = end + window_ms if timeline.wants_next_window(end) else None
    return out
