"""The alert state machines, pure Python (the Flink job keeps their state per asset + tag).

Time is event time in epoch milliseconds. A tag's samples are evaluated in order; between two
samples the earlier value holds. Each rule and tag is a latch: RAISED once, then CLEARED once
per episode.

Delays and timeouts are deadlines in event time, never "the next sample": a condition that
starts with the sample at t0 and is not broken by a sample before t0 + on_delay_s is RAISED
with event time exactly t0 + on_delay_s. `Monitor.on_reading(ts)` first fires every deadline
before ts, then applies the sample (so a sample exactly at the deadline can still cancel it);
`Monitor.on_time(now)` fires the deadlines up to now (the job calls it from an event-time
timer, i.e. when the watermark passes the deadline). Which of the two fires a deadline does
not change the result: a deadline is fired with the unit in force before the sample, and a
CLEARED carries the raised_ts of the episode it ends (even if the same sample raises again).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobs.conditions.rules import (
    AnomalyRule,
    BadQualityRule,
    FlatlineRule,
    LimitRule,
    RateRule,
    Rule,
    StaleRule,
)

RAISED, CLEARED = "RAISED", "CLEARED"


@dataclass(frozen=True, slots=True)
class Alert:
    """One transition, as written to iiot.alerts."""

    asset: str
    tag: str
    rule: str
    kind: str
    severity: str
    status: str
    event_ts: int
    raised_ts: int
    value: float | None
    threshold: float | None
    message: str

    @property
    def key(self) -> str:
        return f"{self.asset}|{self.tag}|{self.rule}"


@dataclass(frozen=True, slots=True)
class Change:
    """A detector's transition before it is dressed up as an Alert."""

    status: str
    event_ts: int
    value: float | None
    threshold: float | None
    message: str


def _g(x: float | None) -> str:
    return "null" if x is None else f"{x:.6g}"


def _v(x: float | None, unit: str) -> str:
    """A value with its unit, if it has one."""
    return f"{_g(x)} {unit}" if unit else _g(x)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


# -- the latch: a condition with an on-delay and an off-delay ----------------------------------


@dataclass(slots=True)
class Latch:
    raised: bool = False
    raised_ts: int = 0
    pending_since: int | None = None  # start of a raise (not raised) or a clear (raised)
    pending_value: float | None = None  # the value in force while pending

    def deadline(self, on_ms: int, off_ms: int) -> int | None:
        if self.pending_since is None:
            return None
        return self.pending_since + (off_ms if self.raised else on_ms)

    def update(self, ts: int, active: bool, inactive: bool, value: float | None,
               on_ms: int, off_ms: int) -> tuple[str, int, float | None] | None:
        """Apply one sample: `active` starts/continues a raise, `inactive` a clear; a sample
        that is neither (inside the hysteresis band) breaks a pending raise or clear."""
        wanted = inactive if self.raised else active
        if not wanted:
            self.pending_since = None
            return None
        if self.pending_since is None:
            self.pending_since = ts
        self.pending_value = value
        return self.advance(ts, on_ms, off_ms)

    def advance(self, now: int, on_ms: int, off_ms: int) -> tuple[str, int, float | None] | None:
        due = self.deadline(on_ms, off_ms)
        if due is None or due > now:
            return None
        self.pending_since = None
        self.raised = not self.raised
        if self.raised:
            self.raised_ts = due
        return (RAISED if self.raised else CLEARED), due, self.pending_value


# -- detectors: the rule's parameters plus what to do with a sample ----------------------------


class Detector:
    """Stateless; the state lives in the object new_state() returns (kept per asset + tag)."""

    rule: Any
    state_type: type = Latch

    def new_state(self) -> Any:
        return self.state_type()

    @property
    def key(self) -> tuple[str, str]:
        """Where the state lives in KeyState.rules (a rule that changes its kind starts over)."""
        return self.rule.name, self.rule.kind

    def sample(self, st: Any, ts: int, value: float | None, quality: str, unit: str
               ) -> list[Change]:
        raise NotImplementedError

    def advance(self, st: Any, now: int, unit: str) -> list[Change]:
        return []

    def deadline(self, st: Any) -> int | None:
        return None

    def raised_ts(self, st: Any) -> int:
        return int(st.raised_ts)


class _Latched(Detector):
    """A detector that is a latch over a per-sample condition."""

    on_ms: int = 0
    off_ms: int = 0

    def describe(self, status: str, value: float | None, unit: str
                 ) -> tuple[float | None, float | None, str]:
        """(value, threshold, message) of a transition."""
        raise NotImplementedError

    def latch(self, st: Any) -> Latch:
        return st

    def advance(self, st: Any, now: int, unit: str) -> list[Change]:
        hit = self.latch(st).advance(now, self.on_ms, self.off_ms)
        return [self._change(hit, unit)] if hit else []

    def deadline(self, st: Any) -> int | None:
        return self.latch(st).deadline(self.on_ms, self.off_ms)

    def _feed(self, st: Latch, ts: int, active: bool, inactive: bool, value: float | None,
              unit: str) -> list[Change]:
        hit = st.update(ts, active, inactive, value, self.on_ms, self.off_ms)
        return [self._change(hit, unit)] if hit else []

    def _change(self, hit: tuple[str, int, float | None], unit: str) -> Change:
        status, ts, value = hit
        return Change(status, ts, *self.describe(status, value, unit))


class LimitDetector(_Latched):
    def __init__(self, rule: LimitRule) -> None:
        self.rule = rule
        self.on_ms, self.off_ms = _ms(rule.on_delay_s), _ms(rule.off_delay_s)
        self.high = rule.kind == "high"
        h = rule.hysteresis
        self.clear_level = rule.limit - h if self.high else rule.limit + h

    def sample(self, st: Latch, ts: int, value: float | None, quality: str, unit: str
               ) -> list[Change]:
        if value is None or quality != "GOOD":
            return []  # BAD/UNCERTAIN samples neither raise nor clear nor break an on-delay
        if self.high:
            active, inactive = value > self.rule.limit, value < self.clear_level
        else:
            active, inactive = value < self.rule.limit, value > self.clear_level
        return self._feed(st, ts, active, inactive, value, unit)

    def describe(self, status: str, value: float | None, unit: str
                 ) -> tuple[float | None, float | None, str]:
        r, above = self.rule, self.high
        if status == RAISED:
            held = f" for {r.on_delay_s:g} s" if r.on_delay_s else ""
            op = ">" if above else "<"
            return value, r.limit, f"{_v(value, unit)} {op} {_g(r.limit)}{held}"
        op = "<" if above else ">"
        held = f" for {r.off_delay_s:g} s" if r.off_delay_s else ""
        return (value, self.clear_level,
                f"{_v(value, unit)} back {op} {_g(self.clear_level)}{held} (limit "
                f"{_g(r.limit)}, hysteresis {_g(r.hysteresis)})")


@dataclass(slots=True)
class RateState:
    latch: Latch = field(default_factory=Latch)
    prev_ts: int | None = None
    prev_value: float = 0.0

    @property
    def raised_ts(self) -> int:
        return self.latch.raised_ts


class RateDetector(_Latched):
    def __init__(self, rule: RateRule) -> None:
        self.rule = rule
        self.on_ms, self.off_ms = _ms(rule.on_delay_s), _ms(rule.off_delay_s)
        self.clear_level = rule.limit - rule.hysteresis

    state_type = RateState

    def sample(self, st: RateState, ts: int, value: float | None, quality: str, unit: str
               ) -> list[Change]:
        if value is None or quality != "GOOD":
            return []
        prev_ts, prev_value = st.prev_ts, st.prev_value
        st.prev_ts, st.prev_value = ts, value
        if prev_ts is None or ts <= prev_ts:
            return []
        rate = (value - prev_value) * 1000.0 / (ts - prev_ts)
        seen = {"both": abs(rate), "rising": rate, "falling": -rate}[self.rule.direction]
        return self._feed(st.latch, ts, seen > self.rule.limit, seen < self.clear_level,
                          rate, unit)

    def latch(self, st: RateState) -> Latch:
        return st.latch

    def describe(self, status: str, value: float | None, unit: str
                 ) -> tuple[float | None, float | None, str]:
        r = self.rule
        per_s = f"{unit}/s" if unit else "/s"
        if status == RAISED:
            return value, r.limit, f"changing at {_g(value)} {per_s}, limit {_g(r.limit)} {per_s}"
        return (value, self.clear_level,
                f"changing at {_g(value)} {per_s}, back below {_g(self.clear_level)}")


@dataclass(slots=True)
class FlatState:
    raised: bool = False
    raised_ts: int = 0
    ref_ts: int | None = None
    ref_value: float = 0.0


class FlatlineDetector(Detector):
    def __init__(self, rule: FlatlineRule) -> None:
        self.rule = rule
        self.duration_ms = _ms(rule.duration_s)

    state_type = FlatState

    def sample(self, st: FlatState, ts: int, value: float | None, quality: str, unit: str
               ) -> list[Change]:
        if value is None or quality != "GOOD":
            return []
        r, out = self.rule, []
        if st.ref_ts is None or abs(value - st.ref_value) > r.epsilon:
            if st.raised:
                st.raised = False
                out.append(Change(CLEARED, ts, value, r.duration_s,
                                  f"moving again: {_v(value, unit)} after "
                                  f"{(ts - st.ref_ts) / 1000 if st.ref_ts else 0:g} s "
                                  f"at {_g(st.ref_value)}"))
            st.ref_ts, st.ref_value = ts, value
        elif not st.raised and ts - st.ref_ts >= self.duration_ms:
            st.raised, st.raised_ts = True, ts
            out.append(Change(RAISED, ts, st.ref_value, r.duration_s,
                              f"stuck at {_v(st.ref_value, unit)} (within {_g(r.epsilon)}) for "
                              f"{(ts - st.ref_ts) / 1000:g} s"))
        return out


@dataclass(slots=True)
class StaleState:
    raised: bool = False
    raised_ts: int = 0
    last_ts: int | None = None


class StaleDetector(Detector):
    def __init__(self, rule: StaleRule) -> None:
        self.rule = rule
        self.timeout_ms = _ms(rule.timeout_s)

    state_type = StaleState

    def sample(self, st: StaleState, ts: int, value: float | None, quality: str, unit: str
               ) -> list[Change]:
        out = []
        if st.raised:
            st.raised = False
            silent = (ts - st.last_ts) / 1000 if st.last_ts is not None else 0
            out.append(Change(CLEARED, ts, value, self.rule.timeout_s,
                              f"data again after {silent:g} s of silence"))
        st.last_ts = ts
        return out

    def deadline(self, st: StaleState) -> int | None:
        if st.raised or st.last_ts is None:
            return None
        return st.last_ts + self.timeout_ms

    def advance(self, st: StaleState, now: int, unit: str) -> list[Change]:
        due = self.deadline(st)
        if due is None or due > now:
            return []
        st.raised, st.raised_ts = True, due
        return [Change(RAISED, due, None, self.rule.timeout_s,
                       f"no reading for {self.rule.timeout_s:g} s")]


class BadQualityDetector(_Latched):
    def __init__(self, rule: BadQualityRule) -> None:
        self.rule = rule
        self.on_ms, self.off_ms = _ms(rule.on_delay_s), _ms(rule.off_delay_s)
        self.qualities = frozenset(rule.qualities)

    def sample(self, st: Latch, ts: int, value: float | None, quality: str, unit: str
               ) -> list[Change]:
        bad = quality in self.qualities
        return self._feed(st, ts, bad, not bad, value, unit)

    def describe(self, status: str, value: float | None, unit: str
                 ) -> tuple[float | None, float | None, str]:
        r, q = self.rule, "/".join(self.rule.qualities)
        if status == RAISED:
            held = f" for {r.on_delay_s:g} s" if r.on_delay_s else ""
            return (value, None, f"quality {q}{held}")
        return (value, None, "quality no longer " + q)


@dataclass(slots=True)
class AnomalyState:
    raised: bool = False
    raised_ts: int = 0
    n: int = 0  # samples learned
    mean: float = 0.0  # the slow baseline
    var: float = 0.0
    fast: float | None = None  # the fast average
    streak: int = 0  # consecutive scored samples beyond the threshold


class AnomalyDetector(Detector):
    def __init__(self, rule: AnomalyRule) -> None:
        self.rule = rule
        lam = rule.smoothing
        self.fast_noise = math.sqrt(lam / (2.0 - lam))  # std of the fast average / std

    state_type = AnomalyState

    def score(self, st: AnomalyState) -> float:
        std = max(math.sqrt(st.var), self.rule.min_std)
        return ((st.fast or 0.0) - st.mean) / (std * self.fast_noise)

    def _learn(self, st: AnomalyState, value: float) -> None:
        st.n += 1
        # a plain running mean/variance at first, exponentially weighted once n > 1/alpha
        alpha = max(self.rule.alpha, 1.0 / st.n)
        diff = value - st.mean
        incr = alpha * diff
        st.mean += incr
        st.var = (1.0 - alpha) * (st.var + diff * incr)

    def sample(self, st: AnomalyState, ts: int, value: float | None, quality: str, unit: str
               ) -> list[Change]:
        r = self.rule
        if value is None or quality != "GOOD":
            return []
        if (r.min_value is not None and value < r.min_value) or (
            r.max_value is not None and value > r.max_value
        ):
            st.streak = 0
            return []
        if st.n < r.warmup_samples:
            st.fast = value if st.fast is None else st.fast + r.smoothing * (value - st.fast)
            self._learn(st, value)
            return []
        # winsorized at the threshold: one wild sample moves neither average far
        limit = r.threshold * max(math.sqrt(st.var), r.min_std)
        value_w = min(max(value, st.mean - limit), st.mean + limit)
        st.fast = value_w if st.fast is None else st.fast + r.smoothing * (value_w - st.fast)
        z = self.score(st)
        seen = {"high": z, "low": -z, "both": abs(z)}[r.direction]
        out = []
        if not st.raised:
            st.streak = st.streak + 1 if seen > r.threshold else 0
            if st.streak >= r.consecutive:
                st.raised, st.raised_ts, st.streak = True, ts, 0
                out.append(Change(RAISED, ts, value, r.threshold,
                                  f"z-score {z:.2f} for {r.consecutive} samples: "
                                  f"{_v(value, unit)}, average {_g(st.fast)} vs baseline "
                                  f"{_g(st.mean)} +- {_g(math.sqrt(st.var))}"))
        elif seen < r.clear_threshold:
            st.raised = False
            out.append(Change(CLEARED, ts, value, r.clear_threshold,
                              f"z-score {z:.2f}: average {_g(st.fast)} back near baseline "
                              f"{_g(st.mean)}"))
        # the baseline learns normal samples only: nothing while raised or unusual
        if not st.raised and abs(z) <= r.learn_threshold:
            self._learn(st, value_w)
        return out


DETECTORS: dict[type, Callable[[Any], Detector]] = {
    LimitRule: LimitDetector,
    RateRule: RateDetector,
    FlatlineRule: FlatlineDetector,
    StaleRule: StaleDetector,
    BadQualityRule: BadQualityDetector,
    AnomalyRule: AnomalyDetector,
}


def detector(rule: Rule) -> Detector:
    return DETECTORS[type(rule)](rule)


# -- per asset + tag: every matching rule --------------------------------------------------------


@dataclass(slots=True)
class KeyState:
    """Everything the job keeps for one asset + tag (pickled into Flink keyed state)."""

    asset: str
    tag: str
    last_ts: int | None = None
    unit: str = ""
    rules: dict[tuple[str, str], Any] = field(default_factory=dict)  # (name, kind) -> state
    timer: int | None = None  # the earliest event-time timer registered (job bookkeeping)


class Monitor:
    """The rules, matched to each asset + tag once (and cached), applied to its KeyState."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self._detectors: dict[tuple[str, str], list[Detector]] = {}

    def detectors(self, asset: str, tag: str) -> list[Detector]:
        found = self._detectors.get((asset, tag))
        if found is None:
            found = [detector(r) for r in self.rules if r.match.matches(asset, tag)]
            self._detectors[(asset, tag)] = found
        return found

    def _alerts(self, ks: KeyState, det: Detector, raised_ts: int, changes: list[Change]
                ) -> list[Alert]:
        """changes as Alerts; raised_ts: the detector's before the first of them."""
        r, out = det.rule, []
        for c in changes:
            if c.status == RAISED:
                raised_ts = c.event_ts
            out.append(Alert(ks.asset, ks.tag, r.name, r.kind, r.severity, c.status, c.event_ts,
                             raised_ts, c.value, c.threshold, c.message))
        return out

    def on_reading(self, ks: KeyState, ts: int, value: float | None, quality: str,
                   unit: str | None = None) -> list[Alert]:
        """One reading; one older than the last one applied for this asset + tag is skipped."""
        if ks.last_ts is not None and ts < ks.last_ts:
            return []
        ks.last_ts = ts
        before = ks.unit  # deadlines before this sample fire as they would from the watermark
        if unit:
            ks.unit = unit
        out: list[Alert] = []
        detectors = self.detectors(ks.asset, ks.tag)
        if len(ks.rules) > len(detectors):  # restarted with other rules: forget the old ones
            keys = {det.key for det in detectors}
            ks.rules = {k: v for k, v in ks.rules.items() if k in keys}
        for det in detectors:
            st = ks.rules.get(det.key)
            if st is None:
                st = ks.rules[det.key] = det.new_state()
            raised_ts = det.raised_ts(st)
            changes = det.advance(st, ts - 1, before)  # deadlines before this sample
            changes += det.sample(st, ts, value, quality, ks.unit)
            if changes:
                out += self._alerts(ks, det, raised_ts, changes)
        return out

    def on_time(self, ks: KeyState, now: int) -> list[Alert]:
        """Event time has reached `now` (the watermark): fire the deadlines up to it."""
        out: list[Alert] = []
        for det in self.detectors(ks.asset, ks.tag):
            st = ks.rules.get(det.key)
            if st is not None:
                raised_ts = det.raised_ts(st)
                changes = det.advance(st, now, ks.unit)
                if changes:
                    out += self._alerts(ks, det, raised_ts, changes)
        return out

    def deadline(self, ks: KeyState) -> int | None:
        """The earliest pending deadline of this asset + tag, if any."""
        dues = [
            d for det in self.detectors(ks.asset, ks.tag)
            if (st := ks.rules.get(det.key)) is not None
            and (d := det.deadline(st)) is not None
        ]
        return min(dues) if dues else None
