"""Readings into Kafka through a store on local disk: one Avro `Reading` per sample, keyed by
asset path, nothing lost while Kafka or the registry is away.

A sample is numbered (`seq`) and encoded when it is emitted; the samples of one turn of the
event loop (a poll's tags) are then written to the connector's store (connectors.core.buffer)
in one transaction, and only then handed to the producer. Each acknowledgement deletes its
reading from the store; what Kafka has not acknowledged stays there through outages, restarts
and SIGKILL. The forwarder keeps at most `max_in_flight` readings in the producer, so a slow or
absent Kafka never blocks the event loop: the store takes the difference, within its bounds
(bytes, age; when full, drop the oldest or stop accepting, every dropped reading counted).

After a restart (or a fatal producer error) the readings in the store may have reached Kafka
before their acknowledgement was recorded. The forwarder then reads each partition from where
its unacknowledged readings can start (`scan_from`, kept with the store) to its end, deletes
from the store every reading of this connector instance it finds there, and sends the rest:
each `(connector, seq)` is in the topic exactly once. Order: oldest first, in seq order, so
each asset's readings keep their order.

The hot path: what stays the same between two readings of one tag (its Kafka key, the Avro
bytes of asset, tag, unit and source) is encoded once, in a `Series` (see `ReadingEncoder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema

from connectors.core.buffer import ROW_OVERHEAD, Row, Store, row_bytes
from connectors.core.config import BufferPolicy
from otbridge.codec.avro import Quality, ReadingEncoder, Series
from otbridge.kafka import (
    TopicSpec,
    consumer_config,
    default_topics,
    ensure_topics,
    producer_config,
)
from otbridge.registry import registry_client, schema_json, schema_text
from otbridge.settings import Settings

log = logging.getLogger(__name__)
TICK_S = 0.02  # the forwarder's cadence while it has something to send or acknowledge
READ_BATCH = 5000  # rows read from the store at a time
#: readings handed to the producer in one turn of the event loop, at most: a backlog of
#: hundreds of thousands is sent in slices, the devices' polls running between them
SEND_BATCH = 2000


@dataclass
class Counters:
    readings: int = 0
    bad: int = 0
    errors: int = 0
    reconnects: int = 0
    delivered: int = 0
    delivery_failures: int = 0
    dropped_full: int = 0  # readings the store had no room for (policy when_full)
    dropped_age: int = 0  # readings older than the store's max_age_s, never sent
    duplicates_avoided: int = 0  # found in Kafka by a reconcile, so not sent again
    repeats: int = 0  # values resent by a device with a source time emitted before (OPC UA)
    buffered: int = 0  # readings in the store (not acknowledged), at the last summary
    buffered_bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def dropped(self) -> int:
        return self.dropped_full + self.dropped_age

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"readings={self.readings} ({self.readings / elapsed:.0f}/s) bad={self.bad} "
            f"errors={self.errors} reconnects={self.reconnects} delivered={self.delivered} "
            f"delivery_failures={self.delivery_failures} buffered={self.buffered} "
            f"({self.buffered_bytes} bytes) dropped={self.dropped} (full {self.dropped_full}, "
            f"age {self.dropped_age}) duplicates_avoided={self.duplicates_avoided} "
            f"repeats={self.repeats}"
        )


class ReadingSink:
    """Numbers samples (`seq`, no gaps, continued across restarts) and stores and forwards
    them as Readings. The connector instance id (`connector`) is the store's: (connector,
    seq) identifies a reading end to end. `limit` stops accepting samples after that many
    (for tests and benchmarks); `emit` then returns False and `on_limit` is called once."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        policy: BufferPolicy,
        topic: str,
        counters: Counters,
        limit: int | None = None,
        on_limit: Callable[[], None] | None = None,
        producer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.policy = policy
        self.topic = topic
        self.connector = store.instance
        self.counters = counters
        self.limit = limit
        self.on_limit = on_limit
        self.producer_overrides = producer_overrides or {}
        self.seq = store.next_seq
        self._first_seq = self.seq
        self._series: dict[tuple[str, str, str | None, str], Series] = {}
        # bodies only: the wire header (schema id) is known once the registry answered
        self._encode_series = ReadingEncoder.for_schema_id(0).encode
        self.header: bytes | None = None
        self._pending: list[Row] = []  # emitted, not yet in the store
        self._last_source: dict[bytes, int] | None = None  # see is_repeat
        self._last_source_dirty: dict[bytes, int] = {}
        self._scheduled = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # made outside the loop: `run` sets it
            self._loop = None
        # stored rows not yet handed to the producer: in memory while the forwarder keeps up
        # (`_live`), read back from the store when it does not (`_from_disk`)
        self._live: deque[Row] = deque()
        self._from_disk = True  # until the forwarder is connected and has reconciled
        self._sent_upto = -1  # highest seq handed to the producer (from the store's order)
        self._in_flight = 0
        # acknowledgements leave the store as a range: every seq up to the lowest one still
        # in flight (`_sent`: seqs in the order sent, which is seq order); `_acks`: seq ->
        # (topic and partition, or None for a rejected one; next offset; bytes)
        self._sent: deque[int] = deque()
        self._acks: dict[int, tuple[tuple[str, int] | None, int, int]] = {}
        self._producer: Producer | None = None
        self._fatal: KafkaError | None = None
        self._dropping = 0  # readings dropped in the current episode (0: none going on)
        self._wake = asyncio.Event()
        self._tokens = float(policy.replay_per_s)
        self._tokens_at = time.monotonic()
        self._expire_at = 0.0

    # --- the connectors' side -------------------------------------------------------------

    @property
    def full(self) -> bool:
        return self.limit is not None and self.seq - self._first_seq >= self.limit

    def series(self, asset: str, tag: str, unit: str | None, source: str) -> Series:
        """The series of one tag (made once, then cached), for `emit_value`."""
        key = (asset, tag, unit, source)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series.of(asset, tag, unit, source)
        return found

    def emit_value(
        self,
        series: Series,
        value: float | None,
        quality: Quality,
        source_ms: int,
        text: str | None = None,
    ) -> bool:
        """One reading of `series` taken at `source_ms` (ms since the epoch, UTC)."""
        seq = self.seq
        if self.limit is not None and seq - self._first_seq >= self.limit:
            return False
        now = time.time_ns() // 1_000_000
        body = self._encode_series(
            series, value, text, quality.value, source_ms, now, seq, self.connector)[5:]
        # the record's Kafka timestamp is the source time: event time for consumers and jobs
        self._pending.append((seq, now, source_ms, series.key, body))
        self.seq = seq + 1
        counters = self.counters
        counters.readings += 1
        if quality is Quality.BAD:
            counters.bad += 1
        if not self._scheduled:
            self._scheduled = True
            if self._loop is not None:
                self._loop.call_soon(self.store_pending)
        if self.on_limit is not None and self.full:
            self.on_limit()
        return True

    def is_repeat(self, series: Series, source_ms: int) -> bool:
        """True if the last reading of `series` emitted (by this connector instance, also
        before a restart) had this very source time: an OPC UA server resends its current
        values with their old source timestamps after every reconnect. Otherwise `source_ms`
        becomes the last, stored with the next readings. (An older source time than the last
        is a new value a server wrote with that time, and is emitted.)"""
        if self._last_source is None:
            self._last_source = self.store.last_source()
        ident = series.head + series.source_bytes
        last = self._last_source.get(ident)
        if last == source_ms:
            return True
        self._last_source[ident] = self._last_source_dirty[ident] = source_ms
        return False

    def poll(self) -> None:
        """Store what was emitted (a connector calls it when it yields anyway)."""
        self.store_pending()

    def stats(self) -> str:
        """The counters' summary, with what the store holds now."""
        self.counters.buffered, self.counters.buffered_bytes = self.store.rows, self.store.bytes
        return self.counters.summary()

    def store_pending(self) -> None:
        """The emitted readings into the store, in one transaction, within its bounds."""
        self._scheduled = False
        rows, self._pending = self._pending, []
        if not rows and not self._last_source_dirty:
            return
        size = sum([len(r[3]) + len(r[4]) for r in rows]) + ROW_OVERHEAD * len(rows)
        if size > self.policy.max_bytes - self.store.bytes:
            rows, size, _ = self._make_room(rows, size)
        dirty, self._last_source_dirty = self._last_source_dirty, {}
        # with no rows: the sequence moves past the dropped ones
        self.store.append(rows, self.seq, dirty)
        if rows:
            if not self._from_disk:
                self._live.extend(rows)
                if len(self._live) > self.policy.max_in_flight:  # behind: read back later
                    self._to_disk()
            self._wake.set()
        if self._dropping and self.store.bytes <= self.policy.max_bytes * 0.9:
            self._episode_over()  # room again (with a margin: one episode, not one per poll)

    def _make_room(self, rows: list[Row], size: int) -> tuple[list[Row], int, int]:
        store, policy, dropped = self.store, self.policy, 0
        if policy.when_full == "drop_oldest":
            self._to_disk()  # the oldest unsent rows are the store's
            need = size - (policy.max_bytes - store.bytes)
            count, _ = store.drop_oldest(self._sent_upto, need)
            dropped += count
        while rows and size > policy.max_bytes - store.bytes:
            # stop_accepting, or nothing unsent left to drop: the newest do not fit
            drop = rows.pop(0 if policy.when_full == "drop_oldest" else -1)
            size -= row_bytes(drop[3], drop[4])
            dropped += 1
        if dropped:
            self.counters.dropped_full += dropped
            self._note_dropped(dropped, "full")
        return rows, size, dropped

    def _note_dropped(self, count: int, why: str) -> None:
        if not self._dropping:
            if why == "full":
                log.warning(
                    "buffer %s is full (%d bytes, max_bytes %d): %s; every dropped reading is "
                    "counted (dropped= in the stats)", self.store.path, self.store.bytes,
                    self.policy.max_bytes,
                    "dropping the oldest readings" if self.policy.when_full == "drop_oldest"
                    else "not accepting new readings")
            else:
                log.warning("buffer %s: readings older than max_age_s %.0f s dropped unsent; "
                            "every dropped reading is counted", self.store.path,
                            self.policy.max_age_s)
        self._dropping += count

    def _episode_over(self) -> None:
        if self._dropping:
            log.warning("buffer %s has room again: %d readings were dropped in that episode",
                        self.store.path, self._dropping)
            self._dropping = 0

    def _to_disk(self) -> None:
        self._live.clear()
        self._from_disk = True

    # --- the forwarder ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Forward from the store to Kafka until `stop`; connect (and reconnect after a fatal
        producer error) with backoff, reconciling with what Kafka already has."""
        self._loop = asyncio.get_running_loop()
        if self._pending:
            self._loop.call_soon(self.store_pending)
        delay = 0.5
        while not stop.is_set():
            if self._producer is None:
                try:
                    await asyncio.to_thread(self._connect)
                    delay = 0.5
                except Exception as exc:  # unreachable Kafka or registry: keep buffering
                    self.counters.errors += 1
                    say = log.warning if delay == 0.5 else log.debug
                    say("cannot forward yet (%s); buffering on disk in %s, retrying",
                        _why(exc), self.store.path)
                    await _sleep(stop, delay)
                    delay = min(delay * 2, 15.0)
                    self._expire()
                    continue
            more = self._forward()
            if self._fatal is not None:
                log.error("producer failed (%s): reconnecting and reconciling", self._fatal)
                self._reset_producer()
                continue
            if more:
                await asyncio.sleep(0)  # the rest in the next turn, after the polls due
            else:
                await self._tick(stop)

    async def drain(self, timeout_s: float) -> int:
        """Send what is stored for up to `timeout_s` (after the connector stopped); returns
        how many readings stay in the store (sent when the connector runs next)."""
        self.store_pending()
        deadline = time.monotonic() + timeout_s
        never = asyncio.Event()
        while self.store.rows and time.monotonic() < deadline and self._producer is not None:
            self._forward(limit_rate=False)
            if self._fatal is not None:
                break
            await _sleep(never, TICK_S)
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, max(0.0, deadline - time.monotonic()))
            self._apply_acks()
        self.counters.buffered, self.counters.buffered_bytes = self.store.rows, self.store.bytes
        return int(self.store.rows)

    async def _tick(self, stop: asyncio.Event) -> None:
        idle = not self._live and not self._from_disk and not self._in_flight
        self._wake.clear()
        if idle:
            await _wait(stop, self._wake, 0.5)
        else:
            await _sleep(stop, TICK_S)

    def _forward(self, *, limit_rate: bool = True) -> bool:
        """One slice of sending (at most SEND_BATCH), the producer's callbacks, the
        acknowledgements into the store; True if the slice was full (more is waiting)."""
        producer = self._producer
        assert producer is not None
        self.store_pending()
        room = min(self.policy.max_in_flight - self._in_flight, SEND_BATCH)
        before = self._in_flight
        if room > 0:
            if self._from_disk:
                self._send_from_disk(producer, room, limit_rate)
            else:
                self._send_live(producer, room)
        sent = self._in_flight - before
        producer.poll(0)
        self._apply_acks()
        self._expire()
        return sent >= SEND_BATCH

    def _send_live(self, producer: Producer, room: int) -> None:
        live = self._live
        n = min(room, len(live))
        for _ in range(n):
            if not self._send(producer, live.popleft()):
                self._to_disk()
                return

    def _send_from_disk(self, producer: Producer, room: int, limit_rate: bool) -> None:
        if limit_rate:
            now = time.monotonic()
            rate = self.policy.replay_per_s
            self._tokens = min(float(rate), self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
            room = min(room, int(self._tokens))
        while room > 0:
            rows = self.store.unsent(self._sent_upto, min(room, READ_BATCH))
            for row in rows:
                if not self._send(producer, row):
                    return
            room -= len(rows)
            if limit_rate:
                self._tokens -= len(rows)
            if len(rows) < READ_BATCH and room > 0:  # caught up: from memory again
                self._from_disk = False
                return
            if not rows:
                return

    def _send(self, producer: Producer, row: Row) -> bool:
        seq, _, ts, key, body = row
        assert self.header is not None
        try:
            producer.produce(self.topic, value=self.header + body, key=key, timestamp=ts,
                             on_delivery=functools.partial(
                                 self._delivered, seq, len(key) + len(body) + ROW_OVERHEAD))
        except BufferError:  # the producer's own queue is full: the store keeps it
            return False
        self._sent_upto = seq
        self._sent.append(seq)
        self._in_flight += 1
        return True

    def _delivered(self, seq: int, size: int, err: KafkaError | None, msg: Message) -> None:
        self._in_flight -= 1
        if err is None:
            self.counters.delivered += 1
            self._acks[seq] = ((msg.topic(), msg.partition()), msg.offset() + 1, size)  # type: ignore
            return
        if err.fatal() or err.code() == KafkaError._TIMED_OUT:
            # unknown whether it was written: reconcile (new producer) before sending more
            self._fatal = self._fatal or err
            return
        # a permanent rejection (e.g. too large, not authorized): retrying cannot succeed
        self.counters.delivery_failures += 1
        self._acks[seq] = (None, 0, size)
        log.error("delivery to %s failed (key %r), reading seq %d dropped: %s", msg.topic(),
                  msg.key(), seq, err)

    def _apply_acks(self) -> None:
        """Delete every reading up to the lowest seq still in flight, and advance each
        partition's `scan_from` past those only (in one transaction): a reading acknowledged
        above that stays in the store, and a restart's reconcile finds it in Kafka."""
        sent, acks = self._sent, self._acks
        if not acks or not sent or sent[0] not in acks:
            return
        upto, count, freed = -1, 0, 0
        offsets: dict[tuple[str, int], int] = {}
        while sent and sent[0] in acks:
            upto = sent.popleft()
            tp, offset, size = acks.pop(upto)
            count += 1
            freed += size
            if tp is not None:
                offsets[tp] = offset  # per partition in order: the last is the highest
        self.store.delete_upto(upto, count, freed, offsets)

    def _expire(self) -> None:
        if not self.policy.max_age_s or not self._from_disk:
            return
        now = time.monotonic()
        if now < self._expire_at:
            return
        self._expire_at = now + 1.0
        oldest = self.store.oldest_taken_ms()
        cutoff = time.time_ns() // 1_000_000 - int(self.policy.max_age_s * 1000)
        if oldest is not None and oldest < cutoff:
            count = self.store.expire(self._sent_upto, cutoff)
            if count:
                self.counters.dropped_age += count
                self._note_dropped(count, "age")

    def _reset_producer(self) -> None:
        producer, self._producer = self._producer, None
        self._fatal = None
        self._to_disk()
        self._sent_upto = -1
        self._in_flight = 0
        self._sent.clear()
        self._acks.clear()
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.purge()

    # --- connecting (in a thread: it waits on the network) ---------------------------------

    def _connect(self) -> None:
        """In a thread (it waits on the network); the store is touched on the loop's only."""
        loop = self._loop
        assert loop is not None
        settings, subject = self.settings, f"{self.topic}-value"
        text = schema_text("Reading").strip()
        cache_key = "schema_id " + hashlib.sha256(
            f"{settings.registry.url}\n{subject}\n{text}".encode()).hexdigest()
        cached, scan_from = asyncio.run_coroutine_threadsafe(
            self._on_loop(lambda: (self.store.get(cache_key), self.store.scan_from(self.topic))),
            loop).result()
        try:
            ensure_topics(settings, [readings_topic_spec(settings, self.topic)])
        except KafkaException as exc:
            raise ConnectionError(
                f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}") from None
        try:
            schema_id = int(registry_client(settings).register_schema(
                subject, Schema(text, "AVRO")))
        except Exception as exc:
            # the registry away (or the connector restarted while it is): the id it gave
            # last time, for this registry, subject and schema
            if cached is None:
                raise ConnectionError(
                    f"cannot register the Reading schema for {self.topic} at "
                    f"{settings.registry.url}: {_why(exc)}") from None
            schema_id = int(cached)
            log.warning("registry %s unreachable (%s): using schema id %d from the last "
                        "registration", settings.registry.url, _why(exc), schema_id)
        header = b"\x00" + schema_id.to_bytes(4, "big")
        found, ends = reconcile(settings, self.topic, scan_from, header, self.connector)
        producer = Producer(producer_config(settings, **{
            "client.id": self.connector,
            "message.timeout.ms": 0,  # retried until Kafka has it: the store holds the rest
            "queue.buffering.max.messages": self.policy.max_in_flight + READ_BATCH,
            **self.producer_overrides}))
        asyncio.run_coroutine_threadsafe(
            self._adopt(producer, header, found, ends, (cache_key, str(schema_id))),
            loop).result()

    @staticmethod
    async def _on_loop(work: Callable[[], Any]) -> Any:
        return work()

    async def _adopt(self, producer: Producer, header: bytes, found: set[int],
                     ends: dict[tuple[str, int], int], schema_id: tuple[str, str]) -> None:
        """On the loop's thread: forget what Kafka already has, then send from the store."""
        self.store.put(*schema_id)
        self.store_pending()
        avoided = self.store.delete_found(found, ends)
        if avoided:
            log.info("%d readings of %s were already in %s; not sent again", avoided,
                     self.connector, self.topic)
        self.counters.duplicates_avoided += avoided
        self._to_disk()
        self._sent_upto = -1
        self.header = header
        self._producer = producer
        log.info("forwarding to %s at %s (%d readings in %s)", self.topic,
                 self.settings.kafka.bootstrap_servers, self.store.rows, self.store.path)


def reconcile(settings: Settings, topic: str, scan_from: dict[int, int], header: bytes,
              connector: str) -> tuple[set[int], dict[tuple[str, int], int]]:
    """The seqs of `connector`'s readings in `topic` from each partition's `scan_from` to its
    end, and each partition's end (where the next session's readings will start)."""
    consumer = Consumer(consumer_config(
        settings, f"otbridge-reconcile-{connector}", **{
            "isolation.level": "read_uncommitted", "enable.partition.eof": True}))
    found: set[int] = set()
    ends: dict[tuple[str, int], int] = {}
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = sorted(meta.topics[topic].partitions)
        assign = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[(topic, p)] = high
            if p not in scan_from:  # never sent to by this instance (its first connect)
                continue
            start = max(scan_from[p], low)
            if start < high:
                assign.append(TopicPartition(topic, p, start))
        if not assign:
            return found, ends
        schema = fastavro.parse_schema(schema_json("Reading"))
        todo = {tp.partition for tp in assign}
        consumer.assign(assign)
        deadline = time.monotonic() + 120
        while todo:
            if time.monotonic() > deadline:
                raise ConnectionError(f"reconciling with {topic} took over 120 s")
            for msg in consumer.consume(1000, timeout=1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(msg.partition())
                        continue
                    raise KafkaException(err)
                value = msg.value()
                if value and value[:5] == header:
                    with contextlib.suppress(Exception):
                        rec = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema, None)
                        if isinstance(rec, dict) and rec.get("connector") == connector:
                            found.add(int(rec["seq"]))
                partition = int(msg.partition() or 0)
                if int(msg.offset() or 0) + 1 >= ends[(topic, partition)]:
                    todo.discard(partition)
    finally:
        consumer.close()
    return found, ends


def readings_topic_spec(settings: Settings, topic: str) -> TopicSpec:
    """The configured spec when `topic` is otbridge's readings topic, else a default one."""
    for spec in default_topics(settings):
        if spec.name == topic:
            return spec
    return TopicSpec(topic)


def open_sink(
    settings: Settings,
    *,
    topic: str,
    connector_id: str,
    policy: BufferPolicy,
    counters: Counters,
    limit: int | None = None,
    on_limit: Callable[[], None] | None = None,
) -> ReadingSink:
    """The connector's store (its identity and what it has not delivered) and a sink on it.
    Needs neither Kafka nor the registry: the forwarder (`ReadingSink.run`) reaches them."""
    path = policy.path or settings.stack.state_dir / "buffer" / f"{connector_id}.db"
    store = Store(path, connector_id, durability=policy.durability)
    return ReadingSink(settings, store=store, policy=policy, topic=topic, counters=counters,
                       limit=limit, on_limit=on_limit)


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def _wait(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
