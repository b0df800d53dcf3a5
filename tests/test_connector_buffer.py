"""The connectors' store (connectors/core/buffer.py) and the sink's bounds on it, without Kafka:
identity and seq survive a reopen, one process per file, and the when-full policies drop
exactly what they count. The forwarding itself is tested against a real broker that is
killed (tests/test_connector_outage.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connectors.core.buffer import Store, row_bytes
from connectors.core.config import BufferPolicy
from connectors.core.sink import Counters, ReadingSink
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
    again.store.delete([0, 1], 0)  # acknowledged: gone, the sequence goes on
    again.store.close()
    third = sink(path)
    assert third.seq == 7 and [r[0] for r in third.store.unsent(-1, 100)] == [2, 3, 4, 5, 6]
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
    return row_bytes(row[3], row[4])


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
    s.store.db.execute("UPDATE readings SET taken_ms = taken_ms - 120000 WHERE seq < 2")
    s._expire()  # from disk (nothing forwarded yet): the age bound applies
    assert s.counters.dropped_age == 2
    assert [r[0] for r in s.store.unsent(-1, 10)] == [2]
    s.store.close()


def test_store_pending_runs_at_the_end_of_the_loops_turn(tmp_path: Path) -> None:
    async def main() -> list[int]:
        s = sink(tmp_path / "b.db")
        series = s.series("a/b/c/d/e", "x", None, "modbus://x/1")
        for i in range(3):
            s.emit_value(series, float(i), Quality.GOOD, i)
        assert s.store.rows == 0  # still this turn
        await asyncio.sleep(0)
        seqs = [r[0] for r in s.store.unsent(-1, 10)]
        s.store.close()
        return seqs

    assert asyncio.run(main()) == [0, 1, 2]
