"""The connectors' store (connectors/core/buffer.py) and the sink's bounds on it, without Kafka:
identity and seq survive a reopen, one process per file, and the when-full policies drop
exactly what they count. The forwarding itself is tested against a real broker that is
killed (tests/test_connector_outage.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from connectors.core.buffer import NO_HEADER, Store, row_bytes
from connectors.core.config import BufferPolicy
from connectors.core.sink import STORE_AFTER_S, Counters, ReadingSink
from otbridge.codec.avro import Quality
from otbridge.errors import ConfigError
from otbridge.settings import Settings


def sink(path: Path, **policy: object) -> ReadingSink:
    store = Store(path, "press-line1")
    return ReadingSink(Settings(), store=store, policy=BufferPolicy.model_validate(policy),
                       topic="t", counters=Counters())


def emit(s: ReadingSink, n: int, start_ms: int = 1_800_000_000_000) -> None:
    series = s.series("acme/berlin/body/line1/press01", "temperature", "degC", "modbus://x/1")
    for i in range(n):
        s.emit_value(series, 20.0 + i, Quality.GOOD, start_ms + i)
    s.store_pending()


def test_identity_and_seq_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    first = sink(path)
    emit(first, 5)
    instance = first.connector
    assert instance.startswith("press-line1@") and first.seq == 5
    assert [r[0] for r in first.store.unsent(-1, 100)] == [0, 1, 2, 3, 4]
    first.store.close()  # as after SIGKILL: only what is on disk counts

    again = sink(path)
    assert again.connector == instance and again.seq == 5
    emit(again, 2)
    assert [r[0] for r in again.store.unsent(-1, 100)] == list(range(7))
    first_chunk = again.store.chunks(-1, 1)[0]
    assert [r[0] for r in first_chunk.rows] == [0, 1, 2, 3, 4]
    again.store.delete([first_chunk.key], 5, first_chunk.size)  # acknowledged: gone
    again.store.close()
    third = sink(path)
    assert third.seq == 7 and [r[0] for r in third.store.unsent(-1, 100)] == [5, 6]
    assert third.store.rows == 2
    third.store.close()


def test_readings_emitted_but_not_stored_are_never_numbered_twice(tmp_path: Path) -> None:
    """A reading is numbered when emitted, stored at the end of the loop's turn; a crash in
    between loses readings nobody outside saw, and their seqs are given again (no gap)."""
    path = tmp_path / "b.db"
    s = sink(path)
    emit(s, 3)
    series = s.series("a/b/c/d/e", "x", None, "modbus://x/1")
    s.emit_value(series, 1.0, Quality.GOOD, 1)  # not stored: the process dies now
    s.store.close()
    again = sink(path)
    assert again.seq == 3
    again.store.close()


def test_a_second_process_on_the_same_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    first = Store(path, "press-line1")
    with pytest.raises(ConfigError, match=r"b\.db: cannot open the connector's buffer.*"
                                          r"another process of connector 'press-line1'"):
        Store(path, "press-line1")
    first.close()
    with pytest.raises(ConfigError, match="belongs to connector 'press-line1', not 'other'"):
        Store(path, "other")


def one_row_bytes(tmp_path: Path) -> int:
    probe = sink(tmp_path / "probe.db")
    emit(probe, 1)
    (row,) = probe.store.unsent(-1, 1)
    probe.store.close()
    return row_bytes(row[2], row[3])


@pytest.mark.parametrize("when_full", ["drop_oldest", "stop_accepting"])
def test_a_full_store_drops_exactly_what_it_counts(tmp_path: Path, when_full: str) -> None:
    size = one_row_bytes(tmp_path)
    s = sink(tmp_path / "b.db", max_bytes=10 * size, when_full=when_full)
    emit(s, 4)
    emit(s, 4)
    assert s.counters.dropped_full == 0
    emit(s, 7)  # 15 readings for room of 10
    kept = [r[0] for r in s.store.unsent(-1, 100)]
    assert s.counters.dropped_full == 5 == 15 - len(kept)
    assert s.store.bytes == 10 * size and s.store.rows == 10
    if when_full == "drop_oldest":
        assert kept == list(range(5, 15))
    else:
        assert kept == list(range(10))
    assert s.seq == 15  # the dropped ones keep their numbers: the gap shows downstream
    s.store.close()
    assert sink(tmp_path / "b.db").seq == 15


def test_readings_older_than_max_age_are_dropped_and_counted(tmp_path: Path) -> None:
    s = sink(tmp_path / "b.db", max_age_s=60)
    emit(s, 3)
    emit(s, 1)  # another turn of the loop: another chunk
    old, _ = s.store.chunks(-1, 10)
    s.store.set_taken_ms(old.key, old.taken_ms - 120_000)
    s._expire()  # from disk (nothing forwarded yet): the age bound applies
    assert s.counters.dropped_age == 3
    assert [r[0] for r in s.store.unsent(-1, 10)] == [3] and s.store.rows == 1
    s.store.close()


def test_what_is_emitted_is_stored_within_store_after_s(tmp_path: Path) -> None:
    async def main() -> tuple[list[int], int]:
        s = sink(tmp_path / "b.db")
        series = s.series("a/b/c/d/e", "x", None, "modbus://x/1")
        for i in range(3):
            s.emit_value(series, float(i), Quality.GOOD, i)
        s.poll()
        await asyncio.sleep(0)
        assert s.store.rows == 0  # not yet: the other devices' polls join them
        await asyncio.sleep(STORE_AFTER_S / 2)
        s.emit_value(series, 3.0, Quality.GOOD, 3)
        await asyncio.sleep(STORE_AFTER_S)
        seqs = [r[0] for r in s.store.unsent(-1, 10)]
        chunks = len(s.store.chunks(-1, 10))
        s.store.close()
        return seqs, chunks

    assert asyncio.run(main()) == ([0, 1, 2, 3], 1)  # one chunk, one transaction


def test_a_store_of_the_first_format_is_upgraded_in_place(tmp_path: Path) -> None:
    """The first version kept a row per reading and values without their wire header; its
    readings become chunks (header unknown: replaced when sent), identity and seq kept."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE readings (seq INTEGER PRIMARY KEY, taken_ms INTEGER NOT NULL,
            ts INTEGER NOT NULL, key BLOB NOT NULL, body BLOB NOT NULL);
        INSERT INTO meta VALUES ('instance', 'press-line1@17'), ('next_seq', '9');
        INSERT INTO readings VALUES (7, 100, 1000, X'61', X'0102'), (8, 200, 1001, X'62', X'03');
    """)
    db.close()
    s = sink(path)
    assert s.connector == "press-line1@17" and s.seq == 9
    assert s.store.unsent(-1, 10) == [(7, 1000, b"a", NO_HEADER + b"\x01\x02"),
                                      (8, 1001, b"b", NO_HEADER + b"\x03")]
    assert s.store.rows == 2 and s.store.bytes == row_bytes(b"a", b"x" * 7) + row_bytes(
        b"b", b"x" * 6)
    assert s.store.oldest_taken_ms() == 200
    emit(s, 1)
    s.store.close()
    again = sink(path)
    assert [r[0] for r in again.store.unsent(-1, 10)] == [7, 8, 9] and again.seq == 10
    tables = {n for (n,) in again.store.db.execute("SELECT name FROM sqlite_master")}
    assert "readings" not in tables
    again.store.close()


def test_librdkafka_lines_repeating_during_an_outage_are_logged_once_a_period() -> None:
    """The producer's own lines go through a filter: one line per kind per period, then the
    count of those held back (a broker away for minutes logged two a second before)."""
    import logging
    import time

    from connectors.core.sink import _Repeats

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("test.rdkafka.repeats")
    logger.propagate = False
    logger.addHandler(Keep())
    logger.addFilter(_Repeats(every_s=0.3))

    def fail(port: int, after_ms: int) -> None:
        logger.error("%s [%s] %s", "FAIL", "rdkafka#producer-1",
                     f"[thrd:127.0.0.1:{port}/bootstrap]: 127.0.0.1:{port}/bootstrap: Connect "
                     f"to ipv4#127.0.0.1:{port} failed: Connection refused (after {after_ms}ms)")

    for i in range(50):
        fail(9092, i)
    logger.error("%s [%s] %s", "REQTMOUT", "rdkafka#producer-1", "[thrd:x]: Timed out")
    assert len(lines) == 2 and "Connection refused" in lines[0] and "Timed out" in lines[1]
    time.sleep(0.35)
    fail(9092, 7)
    assert len(lines) == 3 and lines[2].endswith("(and 49 more like it in the last 0 s)"), lines


def test_a_source_time_the_broker_would_refuse_gets_the_ingest_time_as_kafka_timestamp(
        tmp_path: Path) -> None:
    """A device clock hours ahead: the broker refuses a Kafka timestamp more than 1 h ahead
    (message.timestamp.after.max.ms), so such a reading is sent with its ingest time and keeps
    its source_ts in the record (the jobs dead-letter it as future_timestamp)."""
    import time

    s = sink(tmp_path / "b.db")
    series = s.series("acme/berlin/body/line1/press01", "temperature", "degC", "modbus://x/1")
    now = time.time_ns() // 1_000_000
    for ahead_ms in (0, 10 * 60_000, 2 * 3600_000):
        s.emit_value(series, 1.0, Quality.GOOD, now + ahead_ms)
    s.store_pending()
    stamps = [r[1] - now for r in s.store.unsent(-1, 100)]
    assert stamps[:2] == [0, 10 * 60_000]
    assert 0 <= stamps[2] < 5_000
    s.store.close()
