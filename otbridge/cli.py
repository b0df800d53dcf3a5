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
  OTBRIDGE_STACK__STATE_DIR              state folder (data, logs, fetched jars) [.otbridge]
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


def _print_status(report: dict[str, dict[str, object]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for name, part in report.items():
        state = "healthy" if part["healthy"] else "DOWN"
        pids = ",".join(str(p) for p in part["pids"]) or "-"  # type: ignore[attr-defined]
        print(f"{name:<9} {state:<8} {part['address']:<42} pid {pids:<14} {part['detail']}")


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

    # the OT half registers its own commands (`sim`, `connect`, `assets`); optional extras
    for module in ("simulators.cli", "connectors.cli"):
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
        print(f"otbridge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
