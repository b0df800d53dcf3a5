"""The `otbridge` command line."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Sequence

from otbridge.errors import OtbridgeError
from otbridge.settings import Settings, load_settings

Handler = Callable[[argparse.Namespace, Settings], int]

COMPONENT_LOGS = {
    "kafka": ["kafka"],
    "registry": ["registry"],
    "flink": ["flink-jobmanager", "flink-taskmanager"],
    "flink-jobmanager": ["flink-jobmanager"],
    "flink-taskmanager": ["flink-taskmanager"],
}

STACK_HELP = """\
settings (environment variables; or the same keys in otbridge.yaml / $OTBRIDGE_CONFIG):
  OTBRIDGE_STACK__STATE_DIR              state folder (data, logs) [.otbridge in the cwd]
  OTBRIDGE_STACK__LIB_DIR                fetched jars, may be shared by stacks [STATE_DIR/lib]
  OTBRIDGE_STACK__KAFKA_PORT             Kafka broker port [9092]
  OTBRIDGE_STACK__KAFKA_CONTROLLER_PORT  KRaft controller port [9093]
  OTBRIDGE_STACK__REGISTRY_PORT          Apicurio Registry HTTP port [8080]
  OTBRIDGE_STACK__FLINK_REST_PORT        Flink REST / web UI port [8081]
  OTBRIDGE_STACK__FLINK_RPC_PORT         Flink JobManager RPC port [6123]
"""


def cmd_stack_up(args: argparse.Namespace, settings: Settings) -> int:
    from otbridge import stack

    stack.up(settings)
    _print_status(stack.status(settings), as_json=False)
    return 0


def cmd_stack_down(args: argparse.Namespace, settings: Settings) -> int:
    from otbridge import stack

    stack.down(settings)
    return 0


def cmd_stack_status(args: argparse.Namespace, settings: Settings) -> int:
    from otbridge import stack

    report = stack.status(settings)
    _print_status(report, as_json=args.json)
    return 0 if all(part["healthy"] for part in report.values()) else 1


def cmd_stack_fetch(args: argparse.Namespace, settings: Settings) -> int:
    from otbridge.stack.fetch import fetch

    if not fetch(settings.stack.lib_dir):
        print(f"already fetched: {settings.stack.lib_dir}")
    return 0


def cmd_stack_logs(args: argparse.Namespace, settings: Settings) -> int:
    files = [settings.stack.log_dir / f"{name}.log" for name in COMPONENT_LOGS[args.component]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"no log yet: {', '.join(missing)}", file=sys.stderr)
        return 1
    follow = ["-F"] if args.follow else []
    cmd = ["tail", "-n", str(args.lines), *follow, *(str(f) for f in files)]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def cmd_jobs_submit(args: argparse.Namespace, settings: Settings) -> int:
    from otbridge import jobs

    # NAME's remainder holds everything after it: submit's own options given after NAME are
    # taken back out of it, the rest goes to the job
    own = argparse.ArgumentParser(prog="otbridge jobs submit", add_help=False)
    own.add_argument("--jobmanager", default=args.jobmanager)
    own.add_argument("--parallelism", type=int, default=args.parallelism)
    own.add_argument("--resume", action="store_true", default=args.resume)
    own.add_argument("--replace", action="store_true", default=args.replace)
    options, job_args = own.parse_known_args(args.job_args)
    args.jobmanager = options.jobmanager
    conf = jobs.resume_conf(settings, args.name, job_args) if options.resume else None
    if conf:
        print(f"resuming {args.name} from {conf['execution.state-recovery.path']}")
    job_id = jobs.submit(
        settings, args.name, jobmanager=options.jobmanager, parallelism=options.parallelism,
        job_args=job_args, flink_conf=conf, replace=options.replace,
    )
    print(f"submitted {args.name}: job id {job_id} "
          f"(web UI: {jobs.rest_url(settings, args.jobmanager)}/#/job/running/{job_id})")
    return 0


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> int:
    from otbridge import jobs

    rows = jobs.list_jobs(settings, args.jobmanager)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no jobs")
    for j in rows:
        print(f"{j['jid']}  {j['state']:<10} {j['name']}")
    return 0


def cmd_jobs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from otbridge import jobs

    cancelled = jobs.cancel(settings, args.name, args.jobmanager)
    if not cancelled:
        print(f"no running job named {args.name!r} (or otbridge-{args.name})", file=sys.stderr)
        return 1
    for jid in cancelled:
        print(f"cancelled {jid}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from otbridge.demo.run import run

    return run(settings, duration_s=args.duration, ui=not args.no_ui, keep_stack=args.keep_stack,
               modbus_port=args.modbus_port, opcua_port=args.opcua_port)


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from otbridge.query import tail

    tail(settings, args.topic, from_beginning=args.from_beginning, max_records=args.max,
         as_json=args.json, key=args.key, idle_timeout_s=args.idle_timeout)
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from otbridge.query import topics

    rows = topics(settings)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        if not r["exists"]:
            print(f"{r['topic']:<22} (not created yet)")
            continue
        schema = r["schema"]
        desc = f"{schema['name']} v{schema['version']} (id {schema['id']})" if schema else "-"
        print(f"{r['topic']:<22} {r['records']:>10} records  {r['partitions']} partitions  {desc}")
    return 0


def _print_status(report: dict[str, dict[str, object]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for name, part in report.items():
        state = "healthy" if part["healthy"] else "DOWN"
        pids = ",".join(str(p) for p in part["pids"]) or "-"  # type: ignore[attr-defined]
        print(f"{name:<9} {state:<8} {part['address']:<42} pid {pids:<14} {part['detail']}")


def one_line(message: str) -> str:
    """A file's single mistake on one line: "f.yaml: invalid ...:" + "  field: problem" becomes
    "f.yaml: invalid ...: field: problem" (several mistakes stay one per line)."""
    head, *rest = message.splitlines() or [""]
    if len(rest) == 1 and head.endswith(":") and rest[0].startswith("  "):
        return f"{head} {rest[0].strip()}"
    return message


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otbridge", description="Open OT/IT bridge: shop floor -> Kafka -> Flink -> IT."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack = sub.add_parser(
        "stack",
        help="the local Kafka + schema registry + Flink stack",
        epilog=STACK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stack_sub = stack.add_subparsers(dest="stack_command", required=True, metavar="ACTION")
    stack_sub.add_parser("up", help="fetch if needed, start, wait until healthy").set_defaults(
        handler=cmd_stack_up
    )
    stack_sub.add_parser("down", help="stop the processes `up` started").set_defaults(
        handler=cmd_stack_down
    )
    st = stack_sub.add_parser("status", help="health and addresses of each part")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(handler=cmd_stack_status)
    stack_sub.add_parser("fetch", help="fetch the Java artifacts with mvn").set_defaults(
        handler=cmd_stack_fetch
    )
    logs = stack_sub.add_parser("logs", help="show a part's log")
    logs.add_argument("component", choices=sorted(COMPONENT_LOGS))
    logs.add_argument("-n", "--lines", type=int, default=100)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(handler=cmd_stack_logs)

    jobs_p = sub.add_parser("jobs", help="submit, list and cancel Flink jobs")
    jobs_sub = jobs_p.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    submit = jobs_sub.add_parser(
        "submit", help="submit jobs/NAME to a Flink cluster (the local one by default)",
        description="Arguments after NAME go to the job (e.g. --window-s 300), except "
        "--jobmanager, --parallelism, --resume and --replace.",
    )
    submit.add_argument("name", help="oee, conditions, downsample or smoke (the minimal example)")
    submit.add_argument("--jobmanager", metavar="HOST:PORT", help="REST address of the cluster")
    submit.add_argument("--parallelism", type=int)
    submit.add_argument("--resume", action="store_true",
                        help="start from the job's latest retained checkpoint (after the "
                        "cluster was restarted)")
    submit.add_argument("--replace", action="store_true",
                        help="cancel a running job of the same name first (two would share a "
                        "transactional id)")
    submit.add_argument("job_args", nargs=argparse.REMAINDER)
    submit.set_defaults(handler=cmd_jobs_submit)
    for action, handler, helptext in (
        ("list", cmd_jobs_list, "jobs on the cluster"),
        ("cancel", cmd_jobs_cancel, "cancel running jobs by name or id"),
    ):
        p = jobs_sub.add_parser(action, help=helptext)
        if action == "cancel":
            p.add_argument("name")
        else:
            p.add_argument("--json", action="store_true")
        p.add_argument("--jobmanager", metavar="HOST:PORT")
        p.set_defaults(handler=handler)

    demo = sub.add_parser(
        "demo", help="the simulated plant end to end: stack, simulators, connectors, jobs, view"
    )
    demo.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    demo.add_argument("--no-ui", action="store_true",
                      help="headless; exit 0 only if every result topic received records")
    demo.add_argument("--keep-stack", action="store_true",
                      help="leave the stack running afterwards (it is stopped if the demo "
                      "started it)")
    demo.add_argument("--modbus-port", type=int, default=5020, metavar="PORT",
                      help="the Modbus simulator's port [5020]")
    demo.add_argument("--opcua-port", type=int, default=4840, metavar="PORT",
                      help="the OPC UA simulator's port [4840]")
    demo.set_defaults(handler=cmd_demo)

    tail_p = sub.add_parser("tail", help="print a topic's records, decoded via the registry")
    tail_p.add_argument("topic")
    tail_p.add_argument("--from-beginning", action="store_true")
    tail_p.add_argument("--max", type=int, metavar="N", help="stop after N records")
    tail_p.add_argument("--json", action="store_true", help="JSON lines (for jq)")
    tail_p.add_argument("--key", metavar="K", help="only records with this key")
    tail_p.add_argument("--idle-timeout", type=float, metavar="S",
                        help="stop when no record came for S seconds")
    tail_p.set_defaults(handler=cmd_tail)
    topics_p = sub.add_parser("topics", help="otbridge's topics: record counts and schemas")
    topics_p.add_argument("--json", action="store_true")
    topics_p.set_defaults(handler=cmd_topics)

    # the OT half registers its own commands (`sim`, `connect`, `assets`), and the benchmark
    # harness `bench` when it is installed beside the product (the product never imports it)
    for module in ("simulators.cli", "connectors.cli", "bench.cli"):
        try:
            register = importlib.import_module(module).register
        except ModuleNotFoundError as exc:
            if exc.name not in (module, module.split(".")[0]):
                raise
            continue
        register(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        handler: Handler = args.handler
        return handler(args, settings)
    except OtbridgeError as exc:
        print(f"otbridge: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
