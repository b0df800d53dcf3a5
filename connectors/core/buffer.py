"""Store and forward: every reading of a connector is on local disk until Kafka has it.

One SQLite file per connector (the standard library's sqlite3, WAL mode) holds the readings
not yet acknowledged, the connector's identity (instance id and the next `seq`) and where in
each partition its unacknowledged readings can be (`scan_from`), each change one transaction.
So a SIGKILL at any instant leaves a consistent store: a numbered reading is either on disk or
was never seen outside the process, and a restarted connector continues the sequence under the
same instance id. Why SQLite rather than an append-only segment log: readings leave the store
in acknowledgement order, not in write order (three partitions, retries), which is a keyed
delete here and would be an index plus compaction in a log; a transaction of a few hundred rows
costs about a microsecond a row. `durability: normal` (synchronous=NORMAL) survives the process
being killed, the WAL being in the OS's page cache; `full` also survives a power cut, at an
fsync per transaction.

Pure storage: what to keep, drop or send is `connectors.core.sink`'s.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from otbridge.errors import ConfigError

#: one stored reading: seq, when it was taken (ms, for the age bound), Kafka timestamp (ms),
#: Kafka key, Avro body (the record without the 5-byte wire header: the schema id is added
#: when it is sent, so readings can be stored before the registry has been reached)
Row = tuple[int, int, int, bytes, bytes]
#: bytes a row counts against the bound besides its key and body (seq, times, SQLite's own)
ROW_OVERHEAD = 24

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS readings (
    seq INTEGER PRIMARY KEY, taken_ms INTEGER NOT NULL, ts INTEGER NOT NULL,
    key BLOB NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS last_source (series BLOB PRIMARY KEY, ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS scan_from (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
    PRIMARY KEY (topic, partition));
"""


def row_bytes(key: bytes, body: bytes) -> int:
    return len(key) + len(body) + ROW_OVERHEAD


class Store:
    """The buffer file of one connector; used from one thread (the connector's event loop)."""

    def __init__(self, path: Path, connector_id: str, *, durability: str = "normal") -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=0.5)
            # exclusive: a second process on the same file fails here, not by corrupting it
            self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
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
        last = self.db.execute("SELECT MAX(seq) FROM readings").fetchone()[0]
        self.next_seq: int = max(int(meta["next_seq"]), -1 if last is None else last + 1)
        self.rows, self.bytes = self.db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(length(key) + length(body) + {ROW_OVERHEAD}), 0) "
            "FROM readings").fetchone()

    def close(self) -> None:
        self.db.close()

    def append(self, rows: Sequence[Row], next_seq: int,
               last_source: dict[bytes, int] | None = None) -> None:
        """Store `rows` (in seq order) and that the next reading is numbered `next_seq`, and
        the newest source time emitted per series where it changed (`last_source`)."""
        db = self.db
        db.execute("BEGIN")
        db.executemany("INSERT INTO readings VALUES (?, ?, ?, ?, ?)", rows)
        if last_source:
            db.executemany("INSERT INTO last_source VALUES (?, ?) ON CONFLICT (series) DO "
                           "UPDATE SET ms = excluded.ms", last_source.items())
        db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (str(next_seq),))
        db.execute("COMMIT")
        self.next_seq = next_seq
        self.rows += len(rows)
        self.bytes += sum(row_bytes(r[3], r[4]) for r in rows)

    def delete(self, seqs: Sequence[int], freed: int,
               scan_from: dict[tuple[str, int], int] | None = None) -> None:
        """Remove rows Kafka has (`freed`: their bytes) and record where each partition's
        unacknowledged readings start, in one transaction."""
        db = self.db
        db.execute("BEGIN")
        db.executemany("DELETE FROM readings WHERE seq = ?", ((s,) for s in seqs))
        if scan_from:
            self._set_scan_from(scan_from)
        db.execute("COMMIT")
        self.rows -= len(seqs)
        self.bytes -= freed

    def delete_upto(self, seq: int, count: int, freed: int,
                    scan_from: dict[tuple[str, int], int]) -> None:
        """Remove every row up to `seq` (Kafka has them: `count` rows, `freed` bytes) and
        record where each partition's unacknowledged readings start, in one transaction."""
        db = self.db
        db.execute("BEGIN")
        db.execute("DELETE FROM readings WHERE seq <= ?", (seq,))
        if scan_from:
            self._set_scan_from(scan_from)
        db.execute("COMMIT")
        self.rows -= count
        self.bytes -= freed

    def delete_found(self, seqs: Iterable[int], scan_from: dict[tuple[str, int], int]) -> int:
        """Remove the rows among `seqs` that are stored (found in Kafka by a reconcile) and set
        `scan_from`; returns how many were stored."""
        db = self.db
        db.execute("BEGIN")
        db.execute("CREATE TEMP TABLE IF NOT EXISTS found (seq INTEGER PRIMARY KEY)")
        db.execute("DELETE FROM found")
        db.executemany("INSERT OR IGNORE INTO found VALUES (?)", ((s,) for s in seqs))
        count, size = db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(length(key) + length(body) + {ROW_OVERHEAD}), 0) "
            "FROM readings WHERE seq IN (SELECT seq FROM found)").fetchone()
        db.execute("DELETE FROM readings WHERE seq IN (SELECT seq FROM found)")
        self._set_scan_from(scan_from)
        db.execute("COMMIT")
        self.rows -= count
        self.bytes -= size
        return int(count)

    def drop_oldest(self, after_seq: int, need_bytes: int) -> tuple[int, int]:
        """Delete the oldest rows after `after_seq` until `need_bytes` are freed (or none is
        left); returns (rows, bytes) deleted."""
        db = self.db
        found: list[tuple[int, int]] = []
        freed = 0
        cursor = db.execute(
            f"SELECT seq, length(key) + length(body) + {ROW_OVERHEAD} FROM readings "
            "WHERE seq > ? ORDER BY seq", (after_seq,))
        for seq, size in cursor:
            found.append((seq, size))
            freed += size
            if freed >= need_bytes:
                break
        cursor.close()
        self.delete([s for s, _ in found], freed)
        return len(found), freed

    def expire(self, after_seq: int, taken_before_ms: int) -> int:
        """Delete rows after `after_seq` taken before `taken_before_ms`; returns how many."""
        db = self.db
        db.execute("BEGIN")
        count, size = db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(length(key) + length(body) + {ROW_OVERHEAD}), 0) "
            "FROM readings WHERE seq > ? AND taken_ms < ?",
            (after_seq, taken_before_ms)).fetchone()
        db.execute("DELETE FROM readings WHERE seq > ? AND taken_ms < ?",
                   (after_seq, taken_before_ms))
        db.execute("COMMIT")
        self.rows -= count
        self.bytes -= size
        return int(count)

    def unsent(self, after_seq: int, limit: int) -> list[Row]:
        """Up to `limit` rows after `after_seq`, in seq order."""
        return self.db.execute(
            "SELECT seq, taken_ms, ts, key, body FROM readings WHERE seq > ? ORDER BY seq "
            "LIMIT ?", (after_seq, limit)).fetchall()

    def last_source(self) -> dict[bytes, int]:
        return {bytes(k): int(v) for k, v in self.db.execute("SELECT series, ms FROM last_source")}

    def oldest_taken_ms(self) -> int | None:
        row = self.db.execute("SELECT taken_ms FROM readings ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def scan_from(self, topic: str) -> dict[int, int]:
        return dict(self.db.execute(
            'SELECT partition, "offset" FROM scan_from WHERE topic = ?', (topic,)))

    def _set_scan_from(self, scan_from: dict[tuple[str, int], int]) -> None:
        self.db.executemany(
            'INSERT INTO scan_from VALUES (?, ?, ?) ON CONFLICT (topic, partition) '
            'DO UPDATE SET "offset" = MAX("offset", excluded."offset")',
            [(t, p, o) for (t, p), o in scan_from.items()])

    def set_scan_from(self, scan_from: dict[tuple[str, int], int]) -> None:
        self.db.execute("BEGIN")
        self._set_scan_from(scan_from)
        self.db.execute("COMMIT")

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                        "value = excluded.value", (key, value))
