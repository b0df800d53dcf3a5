"""OPC UA simulator: the plant's OPC UA machines as Objects/Plant/<line>/<machine>/<tag>
(`server.py`). What `otbridge sim opcua` needs is declared here; the server (and asyncua) is
imported only when it runs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from simulators.core.common import add_common_arguments
from simulators.opcua.defaults import DEFAULT_CERT_DIR, DEFAULT_PORT, NAMESPACE_URI, PASSWORD_ENV

if TYPE_CHECKING:
    from otbridge.settings import Settings

NAME = "opcua"
HELP = "OPC UA simulator (serves until Ctrl-C / SIGTERM)"
EXTRA: tuple[str, str] | None = ("asyncua", "opcua")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, default_port=DEFAULT_PORT)
    parser.add_argument(
        "--secure",
        action="store_true",
        help="offer only Basic256Sha256 SignAndEncrypt (self-signed certificate in --cert-dir)",
    )
    parser.add_argument("--user", default=None, help="require this user name (no anonymous login)")
    parser.add_argument(
        "--password",
        default=os.environ.get(PASSWORD_ENV),
        help=f"the user's password [${PASSWORD_ENV}]",
    )
    parser.add_argument(
        "--cert-dir",
        type=Path,
        default=None,
        help=f"where the server certificate and key are kept [{DEFAULT_CERT_DIR}; "
        "otbridge sim: the state folder's sim-pki]",
    )
    parser.add_argument(
        "--namespace-uri", default=NAMESPACE_URI, help="namespace of the plant nodes [%(default)s]"
    )
    parser.add_argument(
        "--update-interval-s", type=float, default=0.5, help="value refresh period [%(default)s]"
    )


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from simulators.opcua.server import serve

    return serve(args, settings)
