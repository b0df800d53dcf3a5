"""The behaviour model of a machine and of an EV charge point, shared by both servers.

Everything here is a pure function of (seed, machine, simulated time in seconds): a model
generates its timeline of phases lazily from its own seeded random generator and evaluates
every signal in closed form, so `sample(t)` gives the same answer whenever and however often
it is asked, and in any order. The servers advance simulated time from the wall clock; tests
ask for explicit times.

Machine: a state machine (RUNNING, then IDLE / BLOCKED / UNPLANNED_STOP with a failure mode /
SETUP / BREAK, then RUNNING again) with random durations; counters advance with the cycle time
while RUNNING; temperature follows load with a first-order lag; the spindle (and with it power
and vibration) ramps up and down; vibration RMS creeps up before a bearing or tool failure and
temperature climbs before an overheat, so predictive maintenance has something to find.

Charge point: sessions of Preparing, Charging (constant power, then a linear taper), SuspendedEV,
Finishing, with Available gaps in between and the odd Faulted spell; session and total energy
are the exact integral of power.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from simulators.core.plant import (
    ChargePointSpec,
    EvStatus,
    FailureModeSpec,
    MachineSpec,
    StateCode,
)

Value = int | float | bool | str

#: Tags a machine model produces, and their types.
MACHINE_TAGS: dict[str, type] = {
    "state": int,
    "failure_mode": int,
    "failure_mode_name": str,
    "running": bool,
    "alarm": bool,
    "count_total": int,
    "count_good": int,
    "run_seconds": int,
    "temperature": float,
    "vibration": float,
    "spindle_speed": float,
    "power": float,
    "energy_total": float,
}

#: Tags a charge point model produces, and their types.
CHARGE_POINT_TAGS: dict[str, type] = {
    "status": int,
    "connected": bool,
    "charging": bool,
    "faulted": bool,
    "power": float,
    "session_energy": float,
    "energy_total": float,
    "ambient_temperature": float,
}

#: Engineering units of the tags (None: dimensionless code or flag).
TAG_UNITS: dict[str, str | None] = {
    "state": None,
    "failure_mode": None,
    "failure_mode_name": None,
    "running": None,
    "alarm": None,
    "count_total": "parts",
    "count_good": "parts",
    "run_seconds": "s",
    "temperature": "degC",
    "vibration": "mm/s",
    "spindle_speed": "rpm",
    "power": "kW",
    "energy_total": "kWh",
    "status": None,
    "connected": None,
    "charging": None,
    "faulted": None,
    "session_energy": "kWh",
    "ambient_temperature": "degC",
}

_SECONDS_PER_HOUR = 3600.0
_DAY_S = 86400.0
_EPS = 1e-9


def derive_seed(seed: int, *parts: str) -> int:
    """A stable 64-bit seed for one (seed, name, ...) combination (not Python's salted hash)."""
    digest = hashlib.blake2b(":".join([str(seed), *parts]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _gauss_at(key: int, k: int) -> float:
    digest = hashlib.blake2b(f"{key}:{k}".encode(), digest_size=16).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 1) / 2.0**64
    u2 = int.from_bytes(digest[8:], "big") / 2.0**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def smooth_noise(key: int, t_s: float, step_s: float = 1.0) -> float:
    """Deterministic smooth noise, about N(0, 1): gaussian knots every step_s, linear between."""
    x = t_s / step_s
    k = math.floor(x)
    frac = x - k
    return (1.0 - frac) * _gauss_at(key, k) + frac * _gauss_at(key, k + 1)


def _lag(v0: float, target: float, tau_s: float, dt_s: float) -> float:
    """First-order lag from v0 toward target after dt_s."""
    return target + (v0 - target) * math.exp(-dt_s / tau_s)


def _lag_integral(v0: float, target: float, tau_s: float, dt_s: float) -> float:
    """Integral of the first-order lag over [0, dt_s]."""
    return target * dt_s + (v0 - target) * tau_s * (1.0 - math.exp(-dt_s / tau_s))


PhaseT = TypeVar("PhaseT")


class _Timeline(Generic[PhaseT]):
    """Phases in time order. `at(t_s)` is the last one starting at or before t_s: the one the
    previous call found if it still holds (the servers' clock only moves on), else a bisect
    on the start times; neither copies anything, however long the timeline has grown."""

    def __init__(self) -> None:
        self._phases: list[PhaseT] = []
        self._starts: list[float] = []
        self._hit = 0

    def append(self, phase: PhaseT, start_s: float) -> None:
        self._phases.append(phase)
        self._starts.append(start_s)

    def at(self, t_s: float) -> PhaseT:
        starts, i = self._starts, self._hit
        if not (starts[i] <= t_s and (i + 1 == len(starts) or t_s < starts[i + 1])):
            i = self._hit = bisect.bisect_right(starts, t_s) - 1
        return self._phases[i]

    def until(self, t_s: float) -> list[PhaseT]:
        return self._phases[: bisect.bisect_right(self._starts, t_s)]


@dataclass(frozen=True)
class Phase:
    """A stretch of constant state and constant targets; values at its start are stored."""

    start_s: float
    end_s: float
    state: StateCode
    failure_mode: int  # the failure while UNPLANNED_STOP, else 0
    temp_target_c: float
    load_target: float  # 0..1; spindle speed, power and vibration follow it
    temp0_c: float
    load0: float
    run_s0: float  # cumulative RUNNING seconds at the start
    scrap0: int  # cumulative scrapped parts at the start
    scrap_frac: float
    energy0_kwh: float
    creep_start_s: float = 0.0  # vibration creep window (before a failure), if creep_mm_s > 0
    creep_end_s: float = 0.0
    creep_mm_s: float = 0.0


class MachineModel:
    """One machine; `sample(t_s)` is a pure function of the seed, the spec and t_s."""

    def __init__(
        self,
        spec: MachineSpec,
        failure_modes: Mapping[int, FailureModeSpec],
        *,
        seed: int,
    ) -> None:
        self.spec = spec
        self.seed = seed
        self.failure_modes = {c: f for c, f in failure_modes.items() if c != 0}
        self._rng = random.Random(derive_seed(seed, spec.name, "timeline"))
        self._noise_keys = {
            tag: derive_seed(seed, spec.name, "noise", tag)
            for tag in ("temperature", "vibration", "spindle_speed", "power")
        }
        p = spec.params
        self._timeline: _Timeline[Phase] = _Timeline()
        # the machine starts warm and RUNNING at t = 0
        self._next_start_s = 0.0
        self._next_temp_c = p.ambient_c + 0.5 * p.temperature_rise_c
        self._next_load = 0.0
        self._next_run_s = 0.0
        self._next_scrap = 0
        self._next_energy_kwh = 0.0

    # -- timeline ------------------------------------------------------------------------

    def _total_at_run_s(self, run_s: float) -> int:
        return math.floor(run_s / self.spec.cycle_time_s + _EPS)

    def _append(
        self,
        duration_s: float,
        state: StateCode,
        *,
        failure_mode: int = 0,
        temp_target_c: float,
        load_target: float,
        scrap_frac: float = 0.0,
        creep: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> None:
        p = self.spec.params
        start = self._next_start_s
        end = start + duration_s
        phase = Phase(
            start_s=start,
            end_s=end,
            state=state,
            failure_mode=failure_mode,
            temp_target_c=temp_target_c,
            load_target=load_target,
            temp0_c=self._next_temp_c,
            load0=self._next_load,
            run_s0=self._next_run_s,
            scrap0=self._next_scrap,
            scrap_frac=scrap_frac,
            energy0_kwh=self._next_energy_kwh,
            creep_start_s=creep[0],
            creep_end_s=creep[1],
            creep_mm_s=creep[2],
        )
        self._timeline.append(phase, start)
        # carry the state over to the next phase
        self._next_start_s = end
        self._next_temp_c = _lag(phase.temp0_c, temp_target_c, p.temperature_tau_s, duration_s)
        self._next_load = _lag(phase.load0, load_target, p.spindle_tau_s, duration_s)
        self._next_energy_kwh = phase.energy0_kwh + self._energy_kwh(phase, duration_s)
        if state == StateCode.RUNNING:
            total0 = self._total_at_run_s(phase.run_s0)
            self._next_run_s = phase.run_s0 + duration_s
            cycles = self._total_at_run_s(self._next_run_s) - total0
            self._next_scrap = phase.scrap0 + math.floor(cycles * scrap_frac)

    def _energy_kwh(self, phase: Phase, dt_s: float) -> float:
        p = self.spec.params
        load_s = _lag_integral(phase.load0, phase.load_target, p.spindle_tau_s, dt_s)
        kw_s = p.idle_power_kw * dt_s + (p.rated_power_kw - p.idle_power_kw) * load_s
        return kw_s / _SECONDS_PER_HOUR

    def _generate_cycle(self) -> None:
        """Append one RUNNING period and the stop that follows it."""
        rng, p = self._rng, self.spec.params
        nexts = [
            (StateCode.UNPLANNED_STOP, p.p_unplanned_stop),
            (StateCode.IDLE, p.p_idle),
            (StateCode.BLOCKED, p.p_blocked),
            (StateCode.SETUP, p.p_setup),
            (StateCode.BREAK, p.p_break),
        ]
        stop = rng.choices([s for s, _ in nexts], weights=[w for _, w in nexts])[0]
        failure: FailureModeSpec | None = None
        if stop == StateCode.UNPLANNED_STOP:
            modes = list(self.failure_modes.values())
            failure = rng.choices(modes, weights=[m.weight for m in modes])[0]
        run_s = max(p.min_run_s, rng.expovariate(1.0 / p.mean_run_s))
        if failure is not None and failure.precursor_s > 0:
            # the symptom must have time to build up while the machine still runs
            run_s = max(run_s, 1.25 * failure.precursor_s)
        scrap_frac = rng.uniform(*p.scrap_rate)
        if stop == StateCode.UNPLANNED_STOP:
            assert failure is not None
            stop_s = rng.uniform(*failure.repair_s)
        else:
            stop_s = rng.uniform(
                *{
                    StateCode.IDLE: p.idle_s,
                    StateCode.BLOCKED: p.blocked_s,
                    StateCode.SETUP: p.setup_s,
                    StateCode.BREAK: p.break_s,
                }[stop]
            )

        hot = p.ambient_c + p.temperature_rise_c
        start = self._next_start_s
        fail_at = start + run_s
        creep = (0.0, 0.0, 0.0)
        if failure is not None and failure.vibration_rise_mm_s > 0:
            creep = (fail_at - failure.precursor_s, fail_at, failure.vibration_rise_mm_s)
        if failure is not None and failure.temperature_rise_c > 0:
            # overheat: the same RUNNING period, the last part with a hotter target
            normal_s = run_s - failure.precursor_s
            self._append(
                normal_s,
                StateCode.RUNNING,
                temp_target_c=hot,
                load_target=1.0,
                scrap_frac=scrap_frac,
                creep=creep,
            )
            self._append(
                failure.precursor_s,
                StateCode.RUNNING,
                temp_target_c=hot + 2.0 * failure.temperature_rise_c,
                load_target=1.0,
                scrap_frac=scrap_frac,
                creep=creep,
            )
        else:
            self._append(
                run_s,
                StateCode.RUNNING,
                temp_target_c=hot,
                load_target=1.0,
                scrap_frac=scrap_frac,
                creep=creep,
            )
        # stopped: powered but not working (starved/blocked) stays a little warm
        warm = 0.15 if stop in (StateCode.IDLE, StateCode.BLOCKED) else 0.0
        self._append(
            stop_s,
            stop,
            failure_mode=failure.code if failure is not None else 0,
            temp_target_c=p.ambient_c + warm * p.temperature_rise_c,
            load_target=0.0,
        )

    def _generate_until(self, t_s: float) -> None:
        if t_s < 0:
            raise ValueError(f"simulated time must be >= 0, got {t_s}")
        while self._next_start_s <= t_s:
            self._generate_cycle()

    def phases_until(self, t_s: float) -> list[Phase]:
        """Every phase that starts at or before t_s (a copy: for analysis, not per sample)."""
        self._generate_until(t_s)
        return self._timeline.until(t_s)

    def phase_at(self, t_s: float) -> Phase:
        """The phase in force at t_s (generated on demand)."""
        self._generate_until(t_s)
        return self._timeline.at(t_s)

    def state_changes(self, until_s: float) -> list[tuple[float, StateCode, int]]:
        """(start_s, state, failure_mode) for each change of state up to until_s."""
        changes: list[tuple[float, StateCode, int]] = []
        for ph in self.phases_until(until_s):
            if not changes or changes[-1][1] != ph.state or changes[-1][2] != ph.failure_mode:
                changes.append((ph.start_s, ph.state, ph.failure_mode))
        return changes

    # -- signals -------------------------------------------------------------------------

    def sample(self, t_s: float) -> dict[str, Value]:
        """Every tag of the machine at simulated time t_s."""
        p = self.spec.params
        ph = self.phase_at(t_s)
        dt = t_s - ph.start_s
        running = ph.state == StateCode.RUNNING
        run_s = ph.run_s0 + (dt if running else 0.0)
        total = self._total_at_run_s(run_s)
        scrap = ph.scrap0
        if running:
            cycles = total - self._total_at_run_s(ph.run_s0)
            scrap += math.floor(cycles * ph.scrap_frac)
        load = _lag(ph.load0, ph.load_target, p.spindle_tau_s, dt)
        temp = _lag(ph.temp0_c, ph.temp_target_c, p.temperature_tau_s, dt)
        vib = p.vibration_idle_mm_s + p.vibration_run_mm_s * load
        if ph.creep_mm_s > 0 and ph.creep_start_s <= t_s <= ph.creep_end_s:
            x = (t_s - ph.creep_start_s) / (ph.creep_end_s - ph.creep_start_s)
            vib += ph.creep_mm_s * x * x
        power = p.idle_power_kw + (p.rated_power_kw - p.idle_power_kw) * load
        speed = p.spindle_rpm * load
        k = self._noise_keys
        failure = self.failure_modes.get(ph.failure_mode)
        return {
            "state": int(ph.state),
            "failure_mode": ph.failure_mode,
            "failure_mode_name": failure.name if failure is not None else "none",
            "running": running,
            "alarm": ph.state == StateCode.UNPLANNED_STOP,
            "count_total": total,
            "count_good": total - scrap,
            "run_seconds": int(run_s),
            "temperature": temp + p.temperature_noise_c * smooth_noise(k["temperature"], t_s, 2.0),
            "vibration": max(
                0.0, vib + p.vibration_noise_mm_s * smooth_noise(k["vibration"], t_s, 0.5)
            ),
            "spindle_speed": max(
                0.0, speed * (1.0 + 0.002 * smooth_noise(k["spindle_speed"], t_s, 0.5))
            ),
            "power": max(0.0, power + p.power_noise_kw * smooth_noise(k["power"], t_s, 0.5)),
            "energy_total": ph.energy0_kwh + self._energy_kwh(ph, dt),
        }


@dataclass(frozen=True)
class EvPhase:
    start_s: float
    end_s: float
    status: EvStatus
    power0_kw: float  # power changes linearly from power0_kw to power1_kw over the phase
    power1_kw: float
    session_energy0_kwh: float
    energy0_kwh: float

    def energy_kwh(self, dt_s: float) -> float:
        dur = self.end_s - self.start_s
        slope = (self.power1_kw - self.power0_kw) / dur if dur > 0 else 0.0
        return (self.power0_kw * dt_s + 0.5 * slope * dt_s * dt_s) / _SECONDS_PER_HOUR

    def power_kw(self, dt_s: float) -> float:
        dur = self.end_s - self.start_s
        return self.power0_kw + (self.power1_kw - self.power0_kw) * (dt_s / dur if dur else 0.0)


class ChargePointModel:
    """One EV charge point; `sample(t_s)` is a pure function of the seed, the spec and t_s."""

    def __init__(self, spec: ChargePointSpec, *, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        self._rng = random.Random(derive_seed(seed, spec.name, "sessions"))
        self._ambient_key = derive_seed(seed, spec.name, "noise", "ambient")
        self._timeline: _Timeline[EvPhase] = _Timeline()
        self._next_start_s = 0.0
        self._session_kwh = 0.0
        self._energy_kwh = 0.0

    def _append(
        self, duration_s: float, status: EvStatus, p0: float = 0.0, p1: float = 0.0
    ) -> None:
        if status == EvStatus.PREPARING:
            self._session_kwh = 0.0  # a new session starts counting from zero
        phase = EvPhase(
            start_s=self._next_start_s,
            end_s=self._next_start_s + duration_s,
            status=status,
            power0_kw=p0,
            power1_kw=p1,
            session_energy0_kwh=self._session_kwh,
            energy0_kwh=self._energy_kwh,
        )
        self._timeline.append(phase, phase.start_s)
        added = phase.energy_kwh(duration_s)
        self._session_kwh += added
        self._energy_kwh += added
        self._next_start_s = phase.end_s

    def _generate_session(self) -> None:
        rng, s = self._rng, self.spec
        self._append(max(5.0, rng.expovariate(1.0 / s.mean_gap_s)), EvStatus.AVAILABLE)
        if rng.random() < s.p_fault:
            self._append(rng.uniform(60.0, 300.0), EvStatus.FAULTED)
            return
        self._append(rng.uniform(5.0, 30.0), EvStatus.PREPARING)
        demand = rng.uniform(*s.energy_demand_kwh)
        p_max = s.max_power_kw * rng.uniform(0.6, 1.0)  # what this car accepts
        p_min = 0.1 * p_max
        bulk_s = 0.8 * demand / p_max * _SECONDS_PER_HOUR
        taper_s = 0.2 * demand / ((p_max + p_min) / 2.0) * _SECONDS_PER_HOUR
        self._append(bulk_s, EvStatus.CHARGING, p_max, p_max)
        self._append(taper_s, EvStatus.CHARGING, p_max, p_min)
        suspended_s = rng.uniform(0.0, 600.0)
        if suspended_s > 1.0:
            self._append(suspended_s, EvStatus.SUSPENDED_EV)
        self._append(rng.uniform(5.0, 20.0), EvStatus.FINISHING)

    def phase_at(self, t_s: float) -> EvPhase:
        """The phase in force at t_s (the sessions are generated on demand)."""
        if t_s < 0:
            raise ValueError(f"simulated time must be >= 0, got {t_s}")
        while self._next_start_s <= t_s:
            self._generate_session()
        return self._timeline.at(t_s)

    def sample(self, t_s: float) -> dict[str, Value]:
        s = self.spec
        ph = self.phase_at(t_s)
        dt = t_s - ph.start_s
        added = ph.energy_kwh(dt)
        # outdoor air: coldest at t = 0 (night), warmest half a day later
        ambient = s.ambient_c - s.ambient_swing_c * math.cos(2.0 * math.pi * t_s / _DAY_S)
        ambient += 0.1 * smooth_noise(self._ambient_key, t_s, 5.0)
        return {
            "status": int(ph.status),
            "connected": ph.status
            in (
                EvStatus.PREPARING,
                EvStatus.CHARGING,
                EvStatus.SUSPENDED_EVSE,
                EvStatus.SUSPENDED_EV,
                EvStatus.FINISHING,
            ),
            "charging": ph.status == EvStatus.CHARGING,
            "faulted": ph.status == EvStatus.FAULTED,
            "power": ph.power_kw(dt),
            "session_energy": ph.session_energy0_kwh + added,
            "energy_total": ph.energy0_kwh + added,
            "ambient_temperature": ambient,
        }


Model = MachineModel | ChargePointModel
