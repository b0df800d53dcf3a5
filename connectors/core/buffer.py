"""Store and forward: every reading of a connector is on local disk until Kafka has it.

One SQLite file per connector (the standard library's sqlite3, WAL mode) holds the readings
not yet acknowledged, the connector's identity (instance id and the next `seq`) and where in
each partition its unacknowledged readings can be (`scan_from`), each change one transaction.
So a SIGKILL at any instant leaves a consistent store: a numbered reading is either on disk or
was never seen outside the process, and a restarted connector continues the sequence under the
same instance id.

The readings of one turn of the event loop (a poll's tags) are one row, a *chunk*: their seqs,
Kafka timestamps, keys and values packed side by side. A row per reading cost about 3 us a
reading in SQLite alone (half of a connector's whole budget); a chunk costs one insert and one
delete for hundreds of readings. Why SQLite rather than an append-only segment log: chunks
leave the store when all their readings are acknowledged, which is not write order across three
partitions and retries (a keyed delete here, an index plus compaction in a log), and the
identity and `scan_from` must change in the same transaction as the readings. `durability:
normal` (synchronous=NORMAL) survives the process being killed, the WAL being in the OS's page
cache; `full` also survives a power cut, at an fsync per transaction.

Pure storage: what to keep, drop or send is `connectors.core.sink`'s.
"""

from __future__ import annotations

import bisect
import sqlite3
import time
from array import array
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from otbridge.errors import ConfigError

#: one stored reading: seq, Kafka timestamp (ms), Kafka key, Kafka value (the Avro record in
#: the wire format; its 5-byte header is the chunk's, replaced when it is sent if the registry
#: gave another schema id since)
Row = tuple[int, int, bytes, bytes]
#: bytes a reading counts against the bound besides its key and value (seq, time, lengths)
ROW_OVERHEAD = 24
#: the header of values stored before the registry was ever reached (schema id unknown)
NO_HEADER = b"\x00\x00\x00\x00\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, n INTEGER NOT NULL,
    taken_ms INTEGER NOT NULL, size INTEGER NOT NULL, header BLOB NOT NULL,
    seqs BLOB NOT NULL, ts BLOB NOT NULL, klens BLOB NOT NULL, vlens BLOB NOT NULL,
    keys BLOB NOT NULL, vals BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS last_source (series BLOB PRIMARY KEY, ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS scan_from (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
    PRIMARY KEY (topic, partition));
"""
_COLUMNS = "first_seq, n, taken_ms, size, header, seqs, ts, klens, vlens, keys, vals"


def row_bytes(key: bytes, value: bytes) -> int:
    return len(key) + len(value) + ROW_OVERHEAD


@dataclass
class Chunk:
    """Readings stored together, identified by their first seq (`key`)."""

    key: int
    header: bytes  # the wire header the values were encoded with
    rows: list[Row]
    taken_ms: int  # when the newest was taken (for the age bound)
    size: int  # bytes counted against the bound


class Packed:
    """Readings in seq order packed for one chunk row: seqs and timestamps as arrays, keys and
    values each joined, with their lengths; `size` is what they count against the bound."""

    __slots__ = ("blobs", "rows", "size")

    def __init__(self, rows: list[Row]) -> None:
        seqs, ts, keys, vals = zip(*rows, strict=True)
        keys_blob, vals_blob = b"".join(keys), b"".join(vals)
        self.rows = rows
        self.blobs = (array("q", seqs).tobytes(), array("q", ts).tobytes(),
                      array("I", map(len, keys)).tobytes(),
                      array("I", map(len, vals)).tobytes(), keys_blob, vals_blob)
        self.size = len(keys_blob) + len(vals_blob) + ROW_OVERHEAD * len(rows)


def _unpack(seqs: bytes, ts: bytes, klens: bytes, vlens: bytes, keys: bytes,
            vals: bytes) -> list[Row]:  # fmt: skip
    s, t, kl, vl = array("q"), array("q"), array("I"), array("I")
    s.frombytes(seqs)
    t.frombytes(ts)
    kl.frombytes(klens)
    vl.frombytes(vlens)
    rows: list[Row] = []
    add = rows.append
    ko = vo = 0
    for seq, stamp, klen, vlen in zip(s, t, kl, vl, strict=True):
        add((seq, stamp, keys[ko:ko + klen], vals[vo:vo + vlen]))
        ko += klen
        vo += vlen
    return rows


def _chunk(row: tuple) -> Chunk:  # type: ignore[type-arg]
    key, _n, taken_ms, size, header, *packed = row
    return Chunk(int(key), bytes(header), _unpack(*packed), int(taken_ms), int(size))


class Store:
    """The buffer file of one connector; used from one thread (the connector's event loop)."""

    def __init__(self, path: Path, connector_id: str, *, durability: str = "normal") -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=0.5)
            # exclusive: a second process on the same file fails here, not by corrupting it
            self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
            # chunks are blobs of tens to hundreds of KB: big pages, fewer WAL frames (a new
            # file only; an existing one keeps its page size)
            self.db.execute("PRAGMA page_size=65536")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
            self.db.executescript(_SCHEMA)
            self.db.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now
            meta = dict(self.db.execute("SELECT key, value FROM meta"))
            if "instance" not in meta:
                meta["instance"] = f"{connector_id}@{time.time_ns() // 1_000_000}"
                meta["next_seq"] = "0"
                self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                    [("instance", meta["instance"]), ("next_seq", "0")])
            self._upgrade()
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise ConfigError(
                f"{path}: cannot open the connector's buffer: {exc} (is another process of "
                f"connector {connector_id!r} running? each needs a buffer file of its own)"
            ) from None
        if not meta["instance"].startswith(f"{connector_id}@"):
            raise ConfigError(f"{path}: this buffer belongs to connector "
                              f"{meta['instance'].split('@')[0]!r}, not {connector_id!r}")
        self.instance: str = meta["instance"]
        last = self.db.execute("SELECT MAX(last_seq) FROM chunks").fetchone()[0]
        self.next_seq: int = max(int(meta["next_seq"]), -1 if last is None else last + 1)
        rows, size = self.db.execute(
            "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(size), 0) FROM chunks").fetchone()
        self.rows, self.bytes = int(rows), int(size)

    def _upgrade(self) -> None:
        """A file of the first version (a row per reading, values without their header):
        its readings as chunks, in the same transaction."""
        db = self.db
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'readings'").fetchone():
            return
        cursor = db.execute("SELECT seq, taken_ms, ts, key, body FROM readings ORDER BY seq")
        while batch := cursor.fetchmany(2000):
            rows = [(s, t, bytes(k), NO_HEADER + bytes(b)) for s, _, t, k, b in batch]
            self._insert(Packed(rows), NO_HEADER, max(r[1] for r in batch))
        db.execute("DROP TABLE readings")

    def close(self) -> None:
        self.db.close()

    def _insert(self, packed: Packed, header: bytes, taken_ms: int) -> None:
        rows = packed.rows
        self.db.execute(f"INSERT INTO chunks ({_COLUMNS}, last_seq) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (rows[0][0], len(rows), taken_ms, packed.size, header, *packed.blobs,
                         rows[-1][0]))  # fmt: skip

    def append(self, packed: Packed | None, header: bytes, next_seq: int,
               last_source: dict[bytes, int] | None = None) -> Chunk | None:
        """Store `packed` (values encoded with `header`) as one chunk, that the next reading
        is numbered `next_seq`, and the newest source time emitted per series where it
        changed (`last_source`), in one transaction; returns the chunk."""
        db = self.db
        taken_ms = time.time_ns() // 1_000_000
        db.execute("BEGIN")
        if packed is not None:
            self._insert(packed, header, taken_ms)
        if last_source:
            db.executemany("INSERT INTO last_source VALUES (?, ?) ON CONFLICT (series) DO "
                           "UPDATE SET ms = excluded.ms", last_source.items())
        if packed is None or packed.rows[-1][0] + 1 != next_seq:
            # else the chunk says it: the next seq is one past its last (see __init__)
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (str(next_seq),))
        db.execute("COMMIT")
        self.next_seq = next_seq
        if packed is None:
            return None
        self.rows += len(packed.rows)
        self.bytes += packed.size
        return Chunk(packed.rows[0][0], header, packed.rows, taken_ms, packed.size)

    def chunks(self, after: int, limit: int, *, below: int | None = None,
               skip: Collection[int] = ()) -> list[Chunk]:
        """Up to `limit` chunks with a key above `after` (and below `below`), in key order,
        leaving out the keys in `skip`."""
        keys = [k for (k,) in self.db.execute(
            "SELECT first_seq FROM chunks WHERE first_seq > ? AND first_seq < ? "
            "ORDER BY first_seq LIMIT ?",
            (after, 2**62 if below is None else below, limit + len(skip))) if k not in skip]
        return [_chunk(self.db.execute(f"SELECT {_COLUMNS} FROM chunks WHERE first_seq = ?",
                                       (k,)).fetchone()) for k in keys[:limit]]

    def unsent(self, after_seq: int, limit: int) -> list[Row]:
        """Up to `limit` readings with a seq above `after_seq`, in seq order (for tests and
        tools: the forwarder reads chunks)."""
        rows: list[Row] = []
        for chunk in self.chunks(-1, 2**31):
            rows += [r for r in chunk.rows if r[0] > after_seq]
            if len(rows) >= limit:
                break
        return rows[:limit]

    def delete(self, keys: Iterable[int], count: int, freed: int,
               scan_from: dict[tuple[str, int], int] | None = None) -> None:
        """Remove the chunks `keys` (Kafka has them: `count` readings, `freed` bytes) and
        record where each partition's unacknowledged readings start, in one transaction."""
        db = self.db
        db.execute("BEGIN")
        db.executemany("DELETE FROM chunks WHERE first_seq = ?", ((k,) for k in keys))
        if scan_from:
            self._set_scan_from(scan_from)
        db.execute("COMMIT")
        self.rows -= count
        self.bytes -= freed

    def _replace(self, chunk: Chunk, rows: list[Row]) -> tuple[int, int]:
        """Within a transaction: `chunk` holding only `rows` now (gone when empty); returns
        (readings, bytes) removed."""
        self.db.execute("DELETE FROM chunks WHERE first_seq = ?", (chunk.key,))
        size = 0
        if rows:
            packed = Packed(rows)
            self._insert(packed, chunk.header, chunk.taken_ms)
            size = packed.size
        return len(chunk.rows) - len(rows), chunk.size - size

    def delete_found(self, seqs: Iterable[int], scan_from: dict[tuple[str, int], int]) -> int:
        """Remove the readings among `seqs` that are stored (found in Kafka by a reconcile)
        and set `scan_from`, in one transaction; returns how many were stored."""
        found = sorted(set(seqs))
        db = self.db
        db.execute("BEGIN")
        removed = freed = 0
        if found:
            spans = db.execute("SELECT first_seq, last_seq FROM chunks WHERE last_seq >= ? AND "
                               "first_seq <= ?", (found[0], found[-1])).fetchall()
            for first, last in spans:
                at = bisect.bisect_left(found, first)
                if at == len(found) or found[at] > last:
                    continue
                (chunk,) = self.chunks(first - 1, 1)
                hits = set(found[at:bisect.bisect_right(found, last)])
                count, size = self._replace(chunk, [r for r in chunk.rows if r[0] not in hits])
                removed += count
                freed += size
        self._set_scan_from(scan_from)
        db.execute("COMMIT")
        self.rows -= removed
        self.bytes -= freed
        return removed

    def drop_oldest(self, after: int, need_bytes: int, *, skip: Collection[int] = ()
                    ) -> tuple[int, int]:  # fmt: skip
        """Delete the oldest readings in chunks with a key above `after` (not in `skip`) until
        `need_bytes` are freed or none is left; returns (readings, bytes) deleted."""
        db = self.db
        dropped = freed = 0
        db.execute("BEGIN")
        while freed < need_bytes:
            found = self.chunks(after, 1, skip=skip)
            if not found:
                break
            chunk = found[0]
            after = chunk.key
            rows, i = chunk.rows, 0
            while i < len(rows) and freed < need_bytes:  # the oldest of the chunk first
                freed += row_bytes(rows[i][2], rows[i][3])
                i += 1
            count, _ = self._replace(chunk, rows[i:])
            dropped += count
        db.execute("COMMIT")
        self.rows -= dropped
        self.bytes -= freed
        return dropped, freed

    def expire(self, after: int, taken_before_ms: int, *, below: int | None = None,
               skip: Collection[int] = ()) -> int:
        """Delete the chunks with a key above `after` (below `below`, not in `skip`) whose
        newest reading was taken before `taken_before_ms`; returns how many readings."""
        db = self.db
        old = [(k, n, size) for k, n, size in db.execute(
            "SELECT first_seq, n, size FROM chunks WHERE first_seq > ? AND first_seq < ? AND "
            "taken_ms < ?", (after, 2**62 if below is None else below, taken_before_ms))
            if k not in skip]  # fmt: skip
        if old:
            self.delete([k for k, _, _ in old], sum(n for _, n, _ in old),
                        sum(size for _, _, size in old))
        return sum(n for _, n, _ in old)

    def set_taken_ms(self, key: int, taken_ms: int) -> None:
        """For tests: when the readings of chunk `key` were taken."""
        self.db.execute("UPDATE chunks SET taken_ms = ? WHERE first_seq = ?", (taken_ms, key))

    def last_source(self) -> dict[bytes, int]:
        return {bytes(k): int(v) for k, v in self.db.execute("SELECT series, ms FROM last_source")}

    def oldest_taken_ms(self) -> int | None:
        row = self.db.execute("SELECT MIN(taken_ms) FROM chunks").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def scan_from(self, topic: str) -> dict[int, int]:
        return dict(self.db.execute(
            'SELECT partition, "offset" FROM scan_from WHERE topic = ?', (topic,)))

    def _set_scan_from(self, scan_from: dict[tuple[str, int], int]) -> None:
        self.db.executemany(
            'INSERT INTO scan_from VALUES (?, ?, ?) ON CONFLICT (topic, partition) '
            'DO UPDATE SET "offset" = MAX("offset", excluded."offset")',
            [(t, p, o) for (t, p), o in scan_from.items()])

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                        "value = excluded.value", (key, value))
