"""What every PyFlink job shares: Kafka/Avro table options from settings, SQL loading."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from otbridge.errors import ConfigError
from otbridge.registry import schema_text
from otbridge.settings import Settings

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StatementSet, StreamTableEnvironment


def sql_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def with_options(options: Mapping[str, str]) -> str:
    """A WITH (...) option list body: 'k' = 'v', one per line."""
    return ",\n  ".join(f"{sql_quote(k)} = {sql_quote(v)}" for k, v in options.items())


def _kafka_common(settings: Settings, topic: str) -> dict[str, str]:
    opts = {"connector": "kafka", "topic": topic}
    for key, value in settings.kafka.java().items():
        opts[f"properties.{key}"] = value
    return opts


def _registry(settings: Settings, prefix: str, schema: str, subject: str | None) -> dict[str, str]:
    reg = settings.registry
    opts = {
        f"{prefix}.format": "avro-confluent",
        f"{prefix}.avro-confluent.url": reg.url,
        f"{prefix}.avro-confluent.schema": schema_text(schema),
    }
    if subject:
        opts[f"{prefix}.avro-confluent.subject"] = subject
    if reg.basic_auth_username and reg.basic_auth_password:
        opts[f"{prefix}.avro-confluent.basic-auth.credentials-source"] = "USER_INFO"
        opts[f"{prefix}.avro-confluent.basic-auth.user-info"] = (
            f"{reg.basic_auth_username}:{reg.basic_auth_password.get_secret_value()}"
        )
    return opts


def kafka_avro_source(
    settings: Settings, *, topic: str, schema: str, group_id: str, bounded: bool = False,
    from_earliest: bool = False,
) -> str:
    """Options of a Kafka table read as Avro (Confluent wire format) with a schema from schemas/."""
    opts = _kafka_common(settings, topic)
    opts |= {
        "properties.group.id": group_id,
        "properties.isolation.level": "read_committed",
        "scan.startup.mode": "earliest-offset" if from_earliest else "group-offsets",
        "properties.auto.offset.reset": "earliest",
        "scan.topic-partition-discovery.interval": "60 s",
    }
    if bounded:
        # stop at the offsets that exist when the job starts (tests, backfills, benchmarks)
        opts["scan.bounded.mode"] = "latest-offset"
    opts |= _registry(settings, "value", schema, None)
    return with_options(opts)


def kafka_raw_source(
    settings: Settings, *, topic: str, group_id: str, bounded: bool = False
) -> str:
    """Options of a Kafka table read as raw key and value bytes (decoded by the job itself)."""
    opts = _kafka_common(settings, topic)
    opts |= {
        "properties.group.id": group_id,
        "properties.isolation.level": "read_committed",
        "scan.startup.mode": "group-offsets",
        "properties.auto.offset.reset": "earliest",
        "scan.topic-partition-discovery.interval": "60 s",
        "key.format": "raw",
        "key.fields": "msg_key",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    if bounded:
        opts["scan.bounded.mode"] = "latest-offset"
    return with_options(opts)


def kafka_raw_sink(settings: Settings, *, topic: str) -> str:
    """Options of a Kafka table written as raw value bytes, at-least-once."""
    opts = _kafka_common(settings, topic)
    opts |= {"format": "raw", "sink.delivery-guarantee": "at-least-once"}
    return with_options(opts)


def kafka_avro_sink(
    settings: Settings,
    *,
    topic: str,
    schema: str,
    key_field: str,
    transactional_id_prefix: str | None,
) -> str:
    """Options of a Kafka table written as Avro; key = the raw UTF-8 `key_field` column.

    With a transactional_id_prefix the sink is exactly-once (read with read_committed).
    """
    opts = _kafka_common(settings, topic)
    opts |= {
        "key.format": "raw",
        "key.fields": key_field,
        "value.fields-include": "EXCEPT_KEY",
    }
    opts |= _registry(settings, "value", schema, f"{topic}-value")
    if transactional_id_prefix:
        opts |= {
            "sink.delivery-guarantee": "exactly-once",
            "sink.transactional-id-prefix": transactional_id_prefix,
            # > checkpoint interval + restart time, < broker transaction.max.timeout.ms
            "properties.transaction.timeout.ms": "600000",
        }
    else:
        opts["sink.delivery-guarantee"] = "at-least-once"
    return with_options(opts)


def render_sql(path: Path, params: Mapping[str, str]) -> list[str]:
    """Fill ${placeholders} in a .sql file and split it into statements (on ';' at line end)."""
    text = Template(path.read_text()).substitute(params)
    statements, current = [], []
    for line in text.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    if "".join(current).strip():
        statements.append("\n".join(current))
    return statements


def job_arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="read only what is in the source topics when the job starts, then finish",
    )
    parser.add_argument(
        "--name-suffix", default="", help="appended to the job name, consumer group and "
        "transactional id (to run a second copy side by side)"
    )
    parser.add_argument(
        "--wait", action="store_true", help="block until the job ends (local mini-cluster runs)"
    )
    parser.add_argument(
        "--local", action="store_true",
        help="run in a local mini-cluster in this process (ships the connector jars; implies "
        "--wait) instead of being submitted with `otbridge jobs submit`",
    )
    parser.add_argument(
        "--topic", action="append", default=[], metavar="ROLE=TOPIC",
        help="override a topic by role (e.g. readings=test.readings)",
    )
    return parser


def create_table_env(
    env: StreamExecutionEnvironment, job_name: str, *, idle_timeout_s: int = 30
) -> StreamTableEnvironment:
    """A streaming table environment set up the way every otbridge job runs (SQL and
    DataStream operators may be mixed)."""
    from pyflink.table import StreamTableEnvironment

    t_env = StreamTableEnvironment.create(env)
    config = t_env.get_config()
    config.set("table.local-time-zone", "UTC")
    config.set("pipeline.name", job_name)
    # quiet partitions (a device that stopped sending) must not stall everyone's windows
    config.set("table.exec.source.idle-timeout", f"{idle_timeout_s} s")
    # chained operators hand records on without a serializer copy (SQL operators never keep
    # or change a record they were given; the Python functions get their own copies anyway)
    config.set("pipeline.object-reuse", "true")
    return t_env


#: set by `run_jobs` while it builds several jobs in one client: `run_job` then hands each built
#: job over here instead of executing it (a job's `main` runs unchanged)
_collected: list[tuple[StreamExecutionEnvironment, str]] | None = None
#: what `run_jobs` prints for each job it submitted (`otbridge.jobs.submit_many` reads it)
SUBMITTED = "otbridge-submitted"
FAILED = "otbridge-failed"


def run_job(name: str, build: Callable[..., StatementSet], argv: Sequence[str] | None,
            description: str, add_args: Callable[[argparse.ArgumentParser], None] | None = None
            ) -> int:
    """The `main` of a job: parse common flags, build against settings, submit/execute."""
    from pyflink.datastream import StreamExecutionEnvironment

    from otbridge.settings import load_settings

    parser = job_arg_parser(description)
    if add_args:
        add_args(parser)
    args = parser.parse_args(argv)
    common = ("bounded", "name_suffix", "topic", "wait", "local")
    extra = {k: v for k, v in vars(args).items() if k not in common}
    settings = load_settings()
    env = StreamExecutionEnvironment.get_execution_environment()
    if args.local:
        jars = sorted((settings.stack.lib_dir / "flink").glob("*.jar"))
        env.add_jars(*(f"file://{jar}" for jar in jars))
    job_name = f"otbridge-{name}{args.name_suffix}"
    t_env = create_table_env(env, job_name)
    stmt_set = build(
        t_env, settings, topics=topic_overrides(args.topic), bounded=args.bounded,
        group_suffix=args.name_suffix, **extra,
    )
    stmt_set.attach_as_datastream()
    if _collected is not None and not (args.wait or args.local):
        _collected.append((env, job_name))
    elif args.wait or args.local:
        env.execute(job_name)
    else:
        env.execute_async(job_name)
    return 0


def run_jobs(specs: Sequence[tuple[str, Sequence[str]]]) -> dict[str, str]:
    """Several jobs from one Flink client (`otbridge jobs submit` with several names): each
    `jobs.<name>.job.main(args)` builds its job as it does alone; once all are built (a
    mistake in any submits none), each is submitted, detached, as a Flink job of its own.
    Prints `SUBMITTED <name> <job id>` per job, or `FAILED <name>` before a job's error.
    Planning them in one JVM costs the client's start-up and warm-up once instead of per job."""
    import importlib

    global _collected
    built: list[tuple[str, StreamExecutionEnvironment, str]] = []
    for name, args in specs:
        _collected = []
        try:
            importlib.import_module(f"jobs.{name}.job").main(list(args))
        except BaseException:
            print(f"{FAILED} {name}", flush=True)
            raise
        finally:
            collected, _collected = _collected, None
        if len(collected) != 1:
            print(f"{FAILED} {name}", flush=True)
            raise ConfigError(f"job {name!r} built {len(collected)} pipelines, expected one "
                              "(--wait and --local run one job alone)")
        built.append((name, *collected[0]))
    ids = {}
    for name, env, job_name in built:
        try:
            ids[name] = str(env.execute_async(job_name).get_job_id())
        except BaseException:
            print(f"{FAILED} {name}", flush=True)
            raise
        print(f"{SUBMITTED} {name} {ids[name]}", flush=True)
    return ids


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m otbridge.flinkjob JSON`: run_jobs for a JSON list of [name, [args...]]."""
    import json
    import sys

    specs = json.loads((sys.argv[1:] if argv is None else list(argv))[0])
    run_jobs([(str(name), [str(a) for a in args]) for name, args in specs])
    return 0


def topic_overrides(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        role, sep, topic = pair.partition("=")
        if not sep or not topic:
            raise ConfigError(
                f"--topic expects ROLE=TOPIC (e.g. readings=test.readings), got {pair!r}"
            )
        out[role] = topic
    return out


if __name__ == "__main__":
    # the jobs import otbridge.flinkjob, not this __main__ copy: collect through that one
    from otbridge.flinkjob import main as _main

    raise SystemExit(_main())
