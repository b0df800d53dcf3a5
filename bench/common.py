"""What every benchmark stage shares: the result row, the run context, the table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from otbridge.settings import Settings


@dataclass
class Result:
    """One measured figure. `value` is in `unit` (e.g. records/s, ms); `target` is the figure
    the project aims for on a 2-core machine, `met` whether this run reached it."""

    stage: str
    figure: str
    value: float
    unit: str
    records: int = 0
    seconds: float = 0.0
    target: str | None = None
    met: bool | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class Context:
    """Passed to every stage; stages leave what later stages compare against in `shared`
    (e.g. the backlog topic and otbridge's own downsample rate, for the alternatives)."""

    settings: Settings
    quick: bool
    readings: int
    shared: dict[str, Any] = field(default_factory=dict)


def at_least(value: float, target: float, unit: str) -> tuple[str, bool]:
    return f">= {target:,.0f} {unit}", value >= target


def at_most(value: float, target: float, unit: str) -> tuple[str, bool]:
    return f"<= {target:,.0f} {unit}", value <= target


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def table(results: list[Result]) -> str:
    lines = ["| stage | figure | value | target | met | records | seconds | settings |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        s = ", ".join(f"{k}={v}" for k, v in r.settings.items())
        if r.note:
            s = f"{s}; {r.note}" if s else r.note
        lines.append(f"| {r.stage} | {r.figure} | {fmt(r.value)} {r.unit} | {r.target or '-'} "
                     f"| {met} | {r.records:,} | {r.seconds:.1f} | {s} |")
    return "\n".join(lines)
