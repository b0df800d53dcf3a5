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
import hashlib
import io
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema

from connectors.core.buffer import NO_HEADER, Chunk, Packed, Row, Store, row_bytes
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
#: readings handed to the producer in one turn of the event loop, at most: a backlog of
#: hundreds of thousands is sent in slices, the devices' polls running between them
SEND_BATCH = 2000
#: emitted readings are stored (one transaction, one chunk) at most this long after the first
#: of them: one commit for the polls of all devices in that time, not one per poll (a commit
#: costs ~100 us); a reading reaches the producer only once it is stored
STORE_AFTER_S = 0.01
#: the Kafka header on a reading sent from the backlog (stored while it could not be sent, or
#: read back after the live readings fell behind): it may arrive after newer ones
REPLAYED: list[tuple[str, str | bytes | None]] = [("otbridge-replayed", b"1")]


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


class _Flight:
    """One chunk on its way to Kafka: its rows, how many were handed to the producer (`next`)
    and how many are not acknowledged yet (`left`). Its bound `delivered` is the producer's
    callback for each of them (one object per chunk, not a closure per reading)."""

    __slots__ = (
        "failed",
        "header",
        "key",
        "left",
        "n",
        "next",
        "offsets",
        "replayed",
        "rows",
        "sink",
        "size",
    )

    def __init__(self, sink: ReadingSink, chunk: Chunk, *, replayed: bool) -> None:
        self.sink = sink
        self.key = chunk.key
        self.header = chunk.header
        self.rows = chunk.rows
        self.n = len(chunk.rows)
        self.size = chunk.size
        self.next = 0
        self.left = self.n
        self.failed = 0
        self.offsets: dict[int, int] = {}  # partition -> highest offset acknowledged
        self.replayed = replayed

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.left -= 1
            self.offsets[msg.partition()] = msg.offset()  # type: ignore[index, assignment]
            return
        code = err.code()
        if code in _PURGED:  # a producer given up on (reconnect): its readings are stored
            return
        if err.fatal() or code == KafkaError._TIMED_OUT:
            # unknown whether it was written: reconcile (new producer) before sending more
            self.sink._fatal = self.sink._fatal or err
            return
        # a permanent rejection (e.g. too large, not authorized): retrying cannot succeed
        self.left -= 1
        self.failed += 1
        self.sink.counters.delivery_failures += 1
        log.error("delivery to %s failed (key %r), a reading of chunk %d dropped: %s",
                  msg.topic(), msg.key(), self.key, err)


_PURGED = frozenset((KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT))


#: below the broker's message.timestamp.after.max.ms (1 h by default in Kafka 4)
MAX_AHEAD_MS = 30 * 60 * 1000


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
        # readings are encoded with the schema id the registry gave last time (kept in the
        # store), or none yet; a chunk encoded with another id than the registry's now gets
        # its header replaced when it is sent
        cached = store.get(self._cache_key())
        self._encoding = NO_HEADER if cached is None else _header(int(cached))
        self._encode_series = ReadingEncoder.for_schema_id(int(cached or 0)).encode
        self.header: bytes | None = None  # the registry's, while connected
        self._pending: list[Row] = []  # emitted, not yet in the store
        self._last_source: dict[bytes, int] | None = None  # see is_repeat
        self._last_source_dirty: dict[bytes, int] = {}
        self._scheduled = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # made outside the loop: `run` sets it
            self._loop = None
        # what to send next: chunks stored while the forwarder keeps up wait in memory
        # (`_live`, while `_live_mode`); the others (`_backlog`) are read back from the store
        # in key order (after `_cursor`, below `_boundary`, leaving out those `_taken`)
        self._live: deque[_Flight] = deque()
        self._live_rows = 0
        self._live_mode = False
        self._backlog = True  # until the forwarder is connected and has reconciled
        self._boundary: int | None = None
        self._cursor = -1
        self._taken: set[int] = set()  # chunks being sent or in flight (not yet deleted)
        self._current: _Flight | None = None  # the chunk being handed to the producer
        # chunks handed to the producer, in that order; they leave the store from the front,
        # each once all its readings are acknowledged
        self._sent: deque[_Flight] = deque()
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
        # the record's Kafka timestamp is the source time: event time for consumers and jobs;
        # a source time the broker would refuse (a device clock far ahead) gets the ingest
        # time instead, so the reading reaches the jobs, which dead-letter it with its reason
        ts = source_ms if source_ms - now < MAX_AHEAD_MS else now
        self._pending.append((seq, ts, series.key, self._encode_series(
            series, value, text, quality.value, source_ms, now, seq, self.connector)))
        self.seq = seq + 1
        counters = self.counters
        counters.readings += 1
        if quality is Quality.BAD:
            counters.bad += 1
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_later(STORE_AFTER_S, self.store_pending)
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
        """A connector calls it when it yields anyway: what was emitted is stored (and then
        sent) within STORE_AFTER_S, together with what the other devices emit meanwhile."""
        if self._pending and not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_later(STORE_AFTER_S, self.store_pending)

    def stats(self) -> str:
        """The counters' summary, with what the store holds now."""
        self.counters.buffered, self.counters.buffered_bytes = self.store.rows, self.store.bytes
        return self.counters.summary()

    def store_pending(self) -> None:
        """The emitted readings into the store as one chunk, in one transaction, within its
        bounds."""
        self._scheduled = False
        rows, self._pending = self._pending, []
        if not rows and not self._last_source_dirty:
            return
        packed = Packed(rows) if rows else None
        if packed is not None and packed.size > self.policy.max_bytes - self.store.bytes:
            rows = self._make_room(rows, packed.size)
            packed = Packed(rows) if rows else None
        dirty, self._last_source_dirty = self._last_source_dirty, {}
        # with no rows: the sequence moves past the dropped ones
        chunk = self.store.append(packed, self._encoding, self.seq, dirty)
        if chunk is not None:
            if self._live_mode:
                self._live.append(_Flight(self, chunk, replayed=False))
                self._live_rows += len(chunk.rows)
                if self._live_rows > self.policy.max_in_flight:  # behind: read back later
                    self._to_disk()
            self._wake.set()
        if self._dropping and self.store.bytes <= self.policy.max_bytes * 0.9:
            self._episode_over()  # room again (with a margin: one episode, not one per poll)

    def _make_room(self, rows: list[Row], size: int) -> list[Row]:
        store, policy, dropped = self.store, self.policy, 0
        if policy.when_full == "drop_oldest":
            self._to_disk()  # the oldest unsent readings are the store's
            need = size - (policy.max_bytes - store.bytes)
            count, _ = store.drop_oldest(-1, need, skip=self._taken)
            dropped += count
        while rows and size > policy.max_bytes - store.bytes:
            # stop_accepting, or nothing unsent left to drop: the newest do not fit
            drop = rows.pop(0 if policy.when_full == "drop_oldest" else -1)
            size -= row_bytes(drop[2], drop[3])
            dropped += 1
        if dropped:
            self.counters.dropped_full += dropped
            self._note_dropped(dropped, "full")
        return rows

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
        """Forget the chunks waiting in memory: they are read back from the store, all
        unsent chunks oldest first (the one being sent is finished first)."""
        self._live.clear()
        self._live_rows = 0
        self._live_mode = False
        self._backlog = True
        self._boundary = None

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
        idle = not (self._live or self._backlog or self._current or self._sent)
        self._wake.clear()
        if idle:
            await _wait(stop, self._wake, 0.5)
        else:
            await _sleep(stop, TICK_S)

    @property
    def in_flight(self) -> int:
        """Readings handed to the producer and not acknowledged yet."""
        return sum([f.next - f.n + f.left for f in self._sent])

    def _forward(self, *, limit_rate: bool = True) -> bool:
        """One slice of sending (at most SEND_BATCH), the producer's callbacks, the
        acknowledgements into the store; True if the slice was full (more is waiting)."""
        producer = self._producer
        assert producer is not None
        self.store_pending()
        room = min(self.policy.max_in_flight - self.in_flight, SEND_BATCH)
        sent = self._send(producer, room, limit_rate) if room > 0 else 0
        producer.poll(0)
        self._apply_acks()
        self._expire()
        return sent >= SEND_BATCH

    def _send(self, producer: Producer, room: int, limit_rate: bool) -> int:
        """Up to `room` readings to the producer: the chunk being sent, then the next ones."""
        sent = 0
        while sent < room:
            flight = self._current
            if flight is None:
                flight = self._current = self._next_flight(limit_rate)
                if flight is None:
                    break
            sent += self._produce(producer, flight, room - sent)
            if flight.next < flight.n:  # no room left, or the producer's queue is full
                break
            self._current = None
        return sent

    def _next_flight(self, limit_rate: bool) -> _Flight | None:
        """The chunk to send next: in memory (live) or read back from the store (backlog),
        in the order `replay` asks for; a backlog within `replay_per_s`."""
        if self._live and (self._boundary is not None or not self._backlog):
            return self._take_live()
        if self._backlog:
            if limit_rate:
                now = time.monotonic()
                rate = self.policy.replay_per_s
                self._tokens = min(float(rate), self._tokens + (now - self._tokens_at) * rate)
                self._tokens_at = now
                if self._tokens < 1:
                    return None
            found = self.store.chunks(self._cursor, 1, below=self._boundary, skip=self._taken)
            if found:
                (chunk,) = found
                self._cursor = chunk.key
                self._taken.add(chunk.key)
                if limit_rate:
                    self._tokens -= len(chunk.rows)
                return _Flight(self, chunk, replayed=True)
            # caught up: what is stored from now on waits in memory
            self._backlog = False
            self._boundary = None
            self._live_mode = True
        return self._take_live()

    def _take_live(self) -> _Flight | None:
        if not self._live:
            return None
        flight = self._live.popleft()
        self._live_rows -= flight.n
        self._taken.add(flight.key)
        return flight

    def _produce(self, producer: Producer, flight: _Flight, room: int) -> int:
        """Hand up to `room` of `flight`'s readings to the producer; returns how many."""
        rows, start = flight.rows, flight.next
        end = min(flight.n, start + room)
        header = self.header
        assert header is not None
        rewrite = flight.header != header
        produce, topic, delivered = producer.produce, self.topic, flight.delivered
        i = start
        try:
            if rewrite or flight.replayed:
                headers = REPLAYED if flight.replayed else None
                for _, ts, key, value in rows[start:end]:
                    if rewrite:
                        value = header + value[5:]
                    produce(topic, value, key, timestamp=ts, on_delivery=delivered,
                            headers=headers)
                    i += 1
            else:  # the hot path: live readings
                for _, ts, key, value in rows[start:end]:
                    produce(topic, value, key, timestamp=ts, on_delivery=delivered)
                    i += 1
        except BufferError:  # the producer's own queue is full: the rest in a later turn
            pass
        if start == 0 and i > 0:
            self._sent.append(flight)
        flight.next = i
        return i - start

    def _apply_acks(self) -> None:
        """Delete the chunks at the front of `_sent` whose readings are all acknowledged,
        and advance each partition's `scan_from` past those only (in one transaction): a
        reading acknowledged behind one still in flight stays in the store, and a restart's
        reconcile finds it in Kafka."""
        sent = self._sent
        if not sent or sent[0].left:
            return
        keys: list[int] = []
        count = freed = delivered = 0
        offsets: dict[tuple[str, int], int] = {}
        topic, taken = self.topic, self._taken
        while sent and not sent[0].left:
            flight = sent.popleft()
            keys.append(flight.key)
            taken.discard(flight.key)
            count += flight.n
            freed += flight.size
            delivered += flight.n - flight.failed
            for partition, offset in flight.offsets.items():
                offsets[(topic, partition)] = offset + 1  # later chunks: higher offsets
        self.counters.delivered += delivered
        self.store.delete(keys, count, freed, offsets)

    def _expire(self) -> None:
        if not self.policy.max_age_s or not self._backlog:
            return
        now = time.monotonic()
        if now < self._expire_at:
            return
        self._expire_at = now + 1.0
        oldest = self.store.oldest_taken_ms()
        cutoff = time.time_ns() // 1_000_000 - int(self.policy.max_age_s * 1000)
        if oldest is not None and oldest < cutoff:
            count = self.store.expire(-1, cutoff, below=self._boundary, skip=self._taken)
            if count:
                self.counters.dropped_age += count
                self._note_dropped(count, "age")

    def _reset_producer(self) -> None:
        producer, self._producer = self._producer, None
        self._fatal = None
        self.header = None
        self._restart_sending()
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.purge()

    def _restart_sending(self) -> None:
        """Nothing in flight: everything stored is sent again from the store."""
        self._to_disk()
        self._current = None
        self._cursor = -1
        self._taken.clear()
        self._sent.clear()

    # --- connecting (in a thread: it waits on the network) ---------------------------------

    def _cache_key(self) -> str:
        """Where the store keeps the schema id of this registry, subject and schema."""
        text = schema_text("Reading").strip()
        return "schema_id " + hashlib.sha256(
            f"{self.settings.registry.url}\n{self.topic}-value\n{text}".encode()).hexdigest()

    def _connect(self) -> None:
        """In a thread (it waits on the network); the store is touched on the loop's only."""
        loop = self._loop
        assert loop is not None
        settings, subject = self.settings, f"{self.topic}-value"
        text = schema_text("Reading").strip()
        cache_key = self._cache_key()
        cached, scan_from = asyncio.run_coroutine_threadsafe(
            self._on_loop(lambda: (self.store.get(cache_key), self.store.scan_from(self.topic))),
            loop).result()
        try:
            ensure_topics(settings, [readings_topic_spec(settings, self.topic)],
                          logger=kafka_client_logger())
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
        found, ends = reconcile(settings, self.topic, scan_from, _header(schema_id),
                                self.connector)
        producer = Producer(producer_config(settings, **{
            "client.id": self.connector,
            "logger": kafka_client_logger(),
            "message.timeout.ms": 0,  # retried until Kafka has it: the store holds the rest
            "queue.buffering.max.messages": self.policy.max_in_flight + 2 * SEND_BATCH,
            **self.producer_overrides}))
        asyncio.run_coroutine_threadsafe(
            self._adopt(producer, schema_id, found, ends, cache_key), loop).result()

    @staticmethod
    async def _on_loop(work: Callable[[], Any]) -> Any:
        return work()

    async def _adopt(self, producer: Producer, schema_id: int, found: set[int],
                     ends: dict[tuple[str, int], int], cache_key: str) -> None:
        """On the loop's thread: forget what Kafka already has, then send from the store."""
        self.store.put(cache_key, str(schema_id))
        self.store_pending()  # encoded with the id known before: stored with it
        header = _header(schema_id)
        if header != self._encoding:
            self._encoding = header
            self._encode_series = ReadingEncoder.for_schema_id(schema_id).encode
        avoided = self.store.delete_found(found, ends)
        if avoided:
            log.info("%d readings of %s were already in %s; not sent again", avoided,
                     self.connector, self.topic)
        self.counters.duplicates_avoided += avoided
        self._restart_sending()
        if self.policy.replay == "live_first":  # what comes now first, the backlog behind
            self._boundary = self.store.next_seq
            self._live_mode = True
        self.header = header
        self._producer = producer
        log.info("forwarding to %s at %s (%d readings in %s)", self.topic,
                 self.settings.kafka.bootstrap_servers, self.store.rows, self.store.path)


class _Repeats(logging.Filter):
    """librdkafka's own log lines (the producer's `logger`), each kind at most once per
    `every_s`: a broker away for minutes is one line a minute, with how many were held back,
    not two a second ("Connect to ... failed: Connection refused")."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._seen: dict[str, tuple[float, int]] = {}  # kind -> (when logged, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        text = str(args[-1]) if args else record.getMessage()
        kind = re.sub(r"\d+", "#", text.split("]: ", 1)[-1])[:120]
        now = time.monotonic()
        last, held = self._seen.get(kind, (-1e9, 0))
        if now - last < self.every_s:
            self._seen[kind] = (last, held + 1)
            return False
        self._seen[kind] = (now, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last %.0f s)"
            record.args = (*args, now - last)
        return True


def kafka_client_logger() -> logging.Logger:
    """The logger librdkafka's lines of a connector's producer go to (see _Repeats)."""
    logger = log.getChild("librdkafka")
    if not any(isinstance(f, _Repeats) for f in logger.filters):
        logger.addFilter(_Repeats())
    return logger


def _header(schema_id: int) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big")


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
