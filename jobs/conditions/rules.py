"""The condition rules file: what to watch (asset and tag globs) and how (one kind per rule).

A rules file is YAML with one key, `rules`, a list of rules. Every rule has a unique `name`, a
`match` (asset and tag glob, or a list of them: `*` matches anything including `/`, `?` one
character), a `kind`, a `severity` and the parameters of its kind; unknown keys are errors.
See jobs/conditions/rules.yaml for the simulated plant's rules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from otbridge.errors import ConfigError

RULES_FILE = Path(__file__).with_name("rules.yaml")

Severity = Literal["info", "warning", "critical"]
Seconds = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    asset: list[str]
    tag: list[str]

    @field_validator("asset", "tag", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("asset", "tag")
    @classmethod
    def _plain_globs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one glob")
        for glob in value:
            if not glob or any(c in glob for c in "[]"):
                raise ValueError(f"{glob!r} is not a glob of text, `*` and `?` (no [...] sets)")
        return value

    def matches(self, asset: str, tag: str) -> bool:
        return any(fnmatchcase(asset, g) for g in self.asset) and any(
            fnmatchcase(tag, g) for g in self.tag
        )


class _Rule(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[^|]+$")]
    match: Match
    severity: Severity = "warning"
    description: str = ""


class LimitRule(_Rule):
    """high: value > limit; low: value < limit. Clears once the value is back past the limit by
    the hysteresis (high: value < limit - hysteresis); on/off delays in event-time seconds."""

    kind: Literal["high", "low"]
    limit: float
    hysteresis: Annotated[float, Field(ge=0)] = 0.0
    on_delay_s: Seconds = 0.0
    off_delay_s: Seconds = 0.0


class RateRule(_Rule):
    """|dv/dt| between consecutive GOOD samples (units per second) above limit."""

    kind: Literal["rate"]
    limit: Annotated[float, Field(gt=0)]
    hysteresis: Annotated[float, Field(ge=0)] = 0.0
    direction: Literal["both", "rising", "falling"] = "both"
    on_delay_s: Seconds = 0.0
    off_delay_s: Seconds = 0.0


class FlatlineRule(_Rule):
    """GOOD samples keep coming but stay within epsilon of a run's first value for duration_s."""

    kind: Literal["flatline"]
    duration_s: Annotated[float, Field(gt=0)]
    epsilon: Annotated[float, Field(ge=0)] = 0.0


class StaleRule(_Rule):
    """No reading at all (any quality) for timeout_s of event time."""

    kind: Literal["stale"]
    timeout_s: Annotated[float, Field(gt=0)]


BadQuality = Literal["BAD", "UNCERTAIN"]


def _only_bad() -> list[BadQuality]:
    return ["BAD"]


class BadQualityRule(_Rule):
    """Readings of one of `qualities` for on_delay_s; cleared by a reading of another quality."""

    kind: Literal["bad_quality"]
    qualities: list[BadQuality] = Field(default_factory=_only_bad)
    on_delay_s: Seconds = 0.0
    off_delay_s: Seconds = 0.0


class AnomalyRule(_Rule):
    """An EWMA z-score of GOOD samples, for slow drifts such as a bearing's vibration creep.

    A slow baseline (mean and variance, exponentially weighted with `alpha`) is compared with
    a fast exponentially weighted average of the samples (`smoothing`):
    z = (fast - mean) / (std * sqrt(smoothing / (2 - smoothing))), i.e. in units of the
    fast average's own noise. After warmup_samples, samples are winsorized at threshold
    standard deviations (so one wild sample cannot raise an alert alone) and scored: RAISED
    after `consecutive` samples with z beyond threshold, CLEARED by a sample with z back within
    clear_threshold.
    Samples outside [min_value, max_value] (e.g. a stopped machine) are skipped; the baseline
    learns only while not raised and |z| <= learn_threshold, so a creeping fault cannot teach
    it that the creep is normal.
    """

    kind: Literal["anomaly"]
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.005
    smoothing: Annotated[float, Field(gt=0, le=1)] = 0.2
    warmup_samples: Annotated[int, Field(ge=2)] = 120
    threshold: Annotated[float, Field(gt=0)] = 4.0
    learn_threshold: Annotated[float, Field(gt=0)] = 3.0
    clear_threshold: Annotated[float, Field(ge=0)] = 2.0
    consecutive: Annotated[int, Field(ge=1)] = 3
    direction: Literal["high", "low", "both"] = "high"
    min_std: Annotated[float, Field(gt=0)] = 1e-6
    min_value: float | None = None
    max_value: float | None = None

    @model_validator(mode="after")
    def _clear_below_threshold(self) -> AnomalyRule:
        if self.clear_threshold >= self.threshold:
            raise ValueError(
                f"clear_threshold ({self.clear_threshold}) must be below threshold "
                f"({self.threshold})"
            )
        if self.learn_threshold > self.threshold:
            raise ValueError(
                f"learn_threshold ({self.learn_threshold}) must not be above threshold "
                f"({self.threshold})"
            )
        return self


Rule = Annotated[
    LimitRule | RateRule | FlatlineRule | StaleRule | BadQualityRule | AnomalyRule,
    Field(discriminator="kind"),
]
KIND_MODELS: dict[str, type[_Rule]] = {
    "high": LimitRule, "low": LimitRule, "rate": RateRule, "flatline": FlatlineRule,
    "stale": StaleRule, "bad_quality": BadQualityRule, "anomaly": AnomalyRule,
}
KINDS = tuple(KIND_MODELS)


class RulesFile(_Strict):
    rules: list[Rule]

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        return rules


def _where(raw: Any, loc: Sequence[int | str]) -> str:
    """'rule 3 (press-temp-high): limit' from a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        idx, rest = loc[1], [str(p) for p in loc[2:]]
        if rest and rest[0] in KINDS:  # the discriminated union's branch
            rest = rest[1:]
        name = None
        try:
            name = raw["rules"][idx].get("name")
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
        head = f"rule {idx + 1}" + (f" ({name})" if name else "")
        return f"{head}: {'.'.join(rest)}" if rest else head
    return ".".join(str(p) for p in loc) or "file"


def _valid_fields(loc: Sequence[int | str]) -> list[str]:
    """The fields the model at `loc` (an unknown field's location) accepts."""
    model: type[BaseModel] = RulesFile
    parts = list(loc[:-1])
    if parts[:1] == ["rules"]:
        if len(parts) < 3 or parts[2] not in KIND_MODELS:
            return []
        model, parts = KIND_MODELS[str(parts[2])], parts[3:]
    for part in parts:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def parse_rules(raw: Any, source: str = "rules") -> list[Rule]:
    """Validate parsed YAML; a ConfigError names the rule and field of every problem."""
    try:
        return list(RulesFile.model_validate(raw).rules)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] == "union_tag_invalid":
                msg = f"kind must be one of {', '.join(KINDS)}"
            elif err["type"] == "union_tag_not_found":
                msg = f"kind is missing; one of {', '.join(KINDS)}"
            elif err["type"] == "extra_forbidden" and (valid := _valid_fields(err["loc"])):
                msg += f"; valid: {', '.join(valid)}"
            problems.append(f"{_where(raw, err['loc'])}: {msg}")
        raise ConfigError(f"{source}: invalid rules:\n  " + "\n  ".join(problems)) from None


def load_rules(path: str | Path = RULES_FILE) -> list[Rule]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the rules file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_rules(raw, str(path))


def _like(glob: str) -> str:
    """A glob as a SQL LIKE pattern with `!` as the escape character, quoted."""
    out = []
    for c in glob:
        if c in "!%_":
            out.append("!" + c)
        else:
            out.append({"*": "%", "?": "_", "'": "''"}.get(c, c))
    return "'" + "".join(out) + "'"


def sql_filter(rules: Sequence[Rule], asset_col: str = "asset", tag_col: str = "tag") -> str:
    """A SQL condition true for readings some rule matches (so the rest never reach the state
    machines)."""

    def one(col: str, glob: str) -> str:
        if "*" in glob or "?" in glob:
            return f"{col} LIKE {_like(glob)} ESCAPE '!'"
        return f"{col} = '{glob.replace(chr(39), chr(39) * 2)}'"

    def any_of(col: str, globs: list[str]) -> str:
        return "(" + " OR ".join(one(col, g) for g in globs) + ")"

    terms = dict.fromkeys(
        f"({any_of(asset_col, r.match.asset)} AND {any_of(tag_col, r.match.tag)})" for r in rules
    )
    return "\n   OR ".join(terms) if terms else "FALSE"


def rules_json(rules: Sequence[Rule]) -> str:
    """The rules, validated, as the JSON list the JVM state machines read (jobs/udf
    io.otbridge.flink.conditions.ConditionsFunction): every field of every rule, defaults
    filled in, in file order."""
    return json.dumps([rule.model_dump(mode="json") for rule in rules])
