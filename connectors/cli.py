"""`otbridge connect <protocol> --config FILE` and `otbridge assets load FILE`.

The protocols are the folders under connectors/ (connectors.core.protocol). `assets load`
publishes the OEE job's master data (jobs.oee.masterdata); it stays here for now."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

from connectors.core.config import load_config
from connectors.core.protocol import ProtocolSpec
from connectors.core.protocol import protocols as all_protocols
from otbridge.settings import Settings


class UTCFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)  # type: ignore[assignment]


def setup_logging(level: str, *, libraries: tuple[str, ...] = ()) -> None:
    """UTC log lines on stderr; the `libraries`' own loggers only at DEBUG (the connectors
    log the libraries' failures themselves, once, with context)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(UTCFormatter("%(asctime)sZ %(levelname)-7s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in libraries:
        logging.getLogger(noisy).setLevel(logging.CRITICAL if level != "DEBUG" else logging.DEBUG)
    for chatty in ("httpx", "httpx2"):  # one line per schema registry request
        logging.getLogger(chatty).setLevel(logging.WARNING)


def cmd_connect(args: argparse.Namespace, settings: Settings) -> int:
    protocol: ProtocolSpec = args.protocol
    run = protocol.run_function()  # a missing extra says so before the file is read
    config = load_config(args.config, protocol.config)
    config.effective_settings(settings)  # its kafka/registry overrides: errors name the file
    setup_logging(args.log_level, libraries=protocol.libraries)
    return asyncio.run(
        run(config, settings, max_readings=args.max_readings, duration_s=args.duration)
    )


def cmd_assets_load(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.oee.masterdata import load_assets_file, publish_assets

    assets = load_assets_file(args.file)
    topic = args.topic or settings.topics.assets
    count = publish_assets(settings, assets, topic=topic)
    print(f"loaded {count} assets from {args.file} into {topic}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def register(sub: Any) -> None:
    """Add `connect` and `assets` to otbridge's command line (called by otbridge.cli)."""
    connect = sub.add_parser(
        "connect", help="run a source connector: shop-floor devices -> Kafka readings"
    )
    protocols = connect.add_subparsers(dest="connect_command", required=True, metavar="PROTOCOL")
    for protocol in all_protocols():  # one folder each: connectors/<name>/__init__.py
        p = protocols.add_parser(protocol.name, help=protocol.help)
        p.add_argument("--config", required=True, type=Path, metavar="FILE", help="connector YAML")
        p.add_argument(
            "--max-readings",
            type=_positive_int,
            metavar="N",
            help="stop after producing exactly N readings (tests, benchmarks)",
        )
        p.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")
        p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
        p.set_defaults(handler=cmd_connect, protocol=protocol)

    assets = sub.add_parser("assets", help="asset master data (stands in for MES/ERP)")
    actions = assets.add_subparsers(dest="assets_command", required=True, metavar="ACTION")
    load = actions.add_parser(
        "load", help="write an assets YAML file to the compacted assets topic"
    )
    load.add_argument("file", type=Path, metavar="FILE")
    load.add_argument("--topic", help="default: the settings' iiot.assets")
    load.set_defaults(handler=cmd_assets_load)
