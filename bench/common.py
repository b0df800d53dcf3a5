"""What every benchmark stage shares: the typed result row and target, the run context (with
what one stage leaves for a later one), the table, and the product's codec as bench uses it."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from otbridge.codec.avro import ReadingEncoder
from otbridge.codec.wire import RegistryLookup, WireDecoder
from otbridge.kafka import admin, consumer_config
from otbridge.registry import schema_json
from otbridge.settings import Settings

if TYPE_CHECKING:  # the stages' own records, only named here
    from bench.backlog import Timing
    from bench.demo import DemoRun
    from bench.ingest import ConnectorRun, PerfRun
    from bench.latency import Step

#: a result's settings: what the figure was measured with, as plain values
Param = str | int | float | bool | None
Params = dict[str, Param]


@dataclass(frozen=True)
class Target:
    """The figure the project aims for on a 2-core machine: `value >= target` (op ">="),
    `value <= target` ("<=") or exactly `target` ("=")."""

    op: Literal[">=", "<=", "="]
    value: float
    unit: str

    def met_by(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.value
        if self.op == "<=":
            return value <= self.value
        return value == self.value

    def __str__(self) -> str:
        number = f"{self.value:g}" if self.unit == "x" else f"{self.value:,.0f}"
        sep = "" if self.unit == "x" else " "
        return f"{self.op} {number}{sep}{self.unit}" if self.unit else f"{self.op} {number}"


def at_least(target: float, unit: str) -> Target:
    return Target(">=", target, unit)


def at_most(target: float, unit: str) -> Target:
    return Target("<=", target, unit)


@dataclass
class Result:
    """One measured figure. `value` is in `unit` (e.g. records/s, ms); `met` tells whether
    `value` reached `target` (None without a target). A stage that knows more than the value
    (e.g. the output was not the same) passes `met` itself; it may only make it stricter."""

    stage: str
    figure: str
    value: float
    unit: str
    records: int = 0
    seconds: float = 0.0
    target: Target | None = None
    met: bool | None = None
    settings: Params = field(default_factory=dict)
    note: str = ""
    #: with repeated runs: `value` is their median, `spread` (min, max), `runs` how many
    spread: tuple[float, float] | None = None
    runs: int = 1

    def __post_init__(self) -> None:
        if self.target is None:
            if self.met is not None:
                raise ValueError(f"{self.figure}: `met` without a target")
            return
        reached = self.target.met_by(self.value)
        self.met = reached if self.met is None else (self.met and reached)


@dataclass(frozen=True)
class Spread:
    """The median of repeated measurements and their range."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no measurements")
        return cls(statistics.median(values), min(values), max(values), len(values))

    @property
    def range(self) -> tuple[float, float]:
        return (self.low, self.high)


@dataclass
class Backlog:
    """The shared backlog topic (backlog.backlog_topic) and how fast it was written."""

    topic: str
    readings: int  # records in the topic, poison and end markers included
    preload_rate: float  # records/s
    mix: str = ""  # what is in it (backlog.Mix.describe)


@dataclass
class JobRun:
    """otbridge's downsample job on the backlog: the timing and output topics of its first
    run, and the rates of all its runs."""

    timing: Timing
    outputs: dict[str, str]  # role -> topic
    rates: Spread | None = None  # records/s over the repeated runs


@dataclass
class Shared:
    """What a stage leaves for later ones (and for the tests to look at)."""

    producer_run: PerfRun | None = None
    connector_runs: dict[str, ConnectorRun] = field(default_factory=dict)
    backlog: Backlog | None = None
    downsample: JobRun | None = None
    latency_steps: list[Step] = field(default_factory=list)
    demo_runs: list[DemoRun] = field(default_factory=list)  # bench.demo, for demo and memory


@dataclass
class Context:
    """Passed to every stage."""

    settings: Settings
    quick: bool
    readings: int
    repeat: int = 1  # runs per figure: the table shows their median and min-max
    shared: Shared = field(default_factory=Shared)


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def value_cell(r: Result) -> str:
    """`1,234 records/s`, with repeated runs `1,234 records/s (1,100-1,300, 3 runs)`."""
    cell = f"{fmt(r.value)} {r.unit}"
    if r.spread is not None and r.runs > 1:
        cell += f" ({fmt(r.spread[0])}-{fmt(r.spread[1])}, median of {r.runs})"
    return cell


def table(results: list[Result]) -> str:
    lines = ["| stage | figure | value | target | met | records | seconds | settings |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        s = ", ".join(f"{k}={v}" for k, v in r.settings.items())
        if r.note:
            s = f"{s}; {r.note}" if s else r.note
        target = "-" if r.target is None else str(r.target)
        lines.append(f"| {r.stage} | {r.figure} | {value_cell(r)} | {target} "
                     f"| {met} | {r.records:,} | {r.seconds:.1f} | {s} |")
    return "\n".join(lines)


# --- Kafka and the codec, as the stages use them --------------------------------------------


def records_in(settings: Settings, topic: str, consumer: Consumer | None = None) -> int:
    """Records in `topic` (sum over partitions of end - start offset)."""
    own = consumer is None
    consumer = consumer or Consumer(consumer_config(settings, f"bench-{uuid.uuid4().hex}"))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                       cached=False)  # fmt: skip
            total += high - low
        return total
    finally:
        if own:
            consumer.close()


def delete_topics(settings: Settings, topics: Iterable[str]) -> None:
    """Delete the topics a run created (best effort: a leftover topic is worth a note, not a
    failed stage; the admin client must outlive the futures)."""
    client = admin(settings)
    names = sorted(set(topics))
    if not names:
        return
    for name, future in client.delete_topics(names, operation_timeout=30).items():
        try:
            future.result()
        except Exception as exc:
            print(f"  note: could not delete topic {name}: {exc}", flush=True)


def registry_lookup(settings: Settings) -> RegistryLookup:
    return RegistryLookup(settings.registry.url,
                          settings.registry.client_conf().get("basic.auth.user.info"))


def wire_decoder(settings: Settings, schema_name: str) -> WireDecoder:
    """The product's Confluent-wire decoder, reading into schemas/<schema_name>.avsc."""
    return WireDecoder(schema_json(schema_name), registry_lookup(settings))


def reading_encoder(settings: Settings, topic: str) -> ReadingEncoder:
    """The connectors' Reading encoder for `topic` (registers Reading under <topic>-value)."""
    return ReadingEncoder(SchemaRegistryClient(settings.registry.client_conf()), topic)


def offline_reading_encoder(schema_id: int) -> ReadingEncoder:
    """The connectors' Reading encoder for a schema id registered already (a process of its
    own that has no registry client, or a size estimate: `schema_id` 0)."""
    return ReadingEncoder.for_schema_id(schema_id)
