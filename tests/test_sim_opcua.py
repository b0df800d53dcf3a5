# asyncua types DataValue fields as optional and NodeId arguments as its own aliases
# mypy: disable-error-code="union-attr, arg-type, operator"
"""The OPC UA simulator over real sockets: asyncua's Client and its `uaread` command line tool,
against the server started as a process (`python -m simulators.opcua.server`)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID

from otbridge.net import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout

ROBOT01 = {
    "state": 1,
    "failure_mode": 0,
    "count_total": 100,
    "count_good": 98,
    "run_seconds": 3600,
    "temperature": 41.5,
    "vibration": 2.25,
    "spindle_speed": 2950.0,
    "power": 7.5,
    "energy_total": 12.75,
}
SCENARIO = {
    "steps": [
        {"at_s": 0, "machine": "robot01", "set": ROBOT01},
        {"at_s": 0, "machine": "oven01", "set": {"state": 6, "temperature": 180.25}},
        {
            "at_s": 0,
            "machine": "oven01",
            "fault": {"bad_status": "BadSensorFailure", "tags": ["vibration"]},
        },
    ]
}
ROBOT = "acme/berlin/paint/line3/robot01"
UAREAD = str(Path(sys.executable).parent / "uaread")


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


@dataclass
class Served:
    url: str
    control: str | None
    proc: subprocess.Popen[str]


def start_server(tmp: Path, *extra: str, control: bool = True) -> Served:
    scenario = tmp / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    port = free_port()
    args = [
        sys.executable, "-m", "simulators.opcua.server", "--port", str(port),
        "--scenario", str(scenario), "--update-interval-s", "0.2", *extra,
    ]  # fmt: skip
    control_port = free_port() if control else None
    if control_port:
        args += ["--control-port", str(control_port)]
    with (tmp / "server.log").open("w") as log:
        proc = subprocess.Popen(
            args, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=log, text=True
        )
    assert proc.stdout is not None
    wanted = 2 if control_port else 1
    lines = []
    for line in proc.stdout:  # readiness: the server prints its addresses once it listens
        lines.append(line.strip())
        if len(lines) == wanted:
            break
    if proc.poll() is not None or len(lines) < wanted:
        pytest.fail(f"opcua simulator did not start: {lines} {(tmp / 'server.log').read_text()}")
    assert lines[0] == f"opcua simulator listening on opc.tcp://127.0.0.1:{port}/"
    return Served(
        url=f"opc.tcp://127.0.0.1:{port}/",
        control=f"http://127.0.0.1:{control_port}" if control_port else None,
        proc=proc,
    )


def stop_server(served: Served) -> int:
    served.proc.send_signal(signal.SIGTERM)
    try:
        return served.proc.wait(timeout=15)
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_server(tmp_path_factory.mktemp("opcua"))
    yield served
    assert stop_server(served) == 0  # SIGTERM: a clean stop


def http(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


async def machine_node(client: Client, line: str, machine: str) -> Any:
    idx = await client.get_namespace_index("urn:otbridge:plant")
    return await client.nodes.objects.get_child(
        [f"{idx}:Plant", f"{idx}:{line}", f"{idx}:{machine}"]
    )


async def wait_for_status(client: Client, nodeid: str, status: int) -> ua.DataValue:
    deadline = time.monotonic() + 5
    while True:
        dv = await client.get_node(nodeid).read_data_value(raise_on_bad_status=False)
        if dv.StatusCode.value == status or time.monotonic() > deadline:
            return dv
        await asyncio.sleep(0.1)


def test_address_space_values_and_data_types(server):
    async def main() -> None:
        async with Client(server.url, timeout=5) as client:
            assert await client.get_namespace_index("urn:otbridge:plant") == 2
            robot = await machine_node(client, "line3", "robot01")
            assert robot.nodeid == ua.NodeId(ROBOT, 2)
            values = {}
            types = {}
            for child in await robot.get_children():
                name = (await child.read_browse_name()).Name
                values[name] = await child.read_value()
                types[name] = (await child.read_data_type()).Identifier
            assert values == {
                **ROBOT01,
                "failure_mode_name": "none",
                "running": True,
                "alarm": False,
            }
            ids = ua.ObjectIds
            assert types["temperature"] == ids.Double
            assert types["count_total"] == ids.UInt32
            assert types["state"] == ids.UInt16
            assert types["running"] == ids.Boolean
            assert types["failure_mode_name"] == ids.String
            oven = await machine_node(client, "line3", "oven01")
            temp = await oven.get_child(["2:temperature"])
            assert await temp.read_value() == 180.25
            assert await (await oven.get_child(["2:state"])).read_value() == 6

    run(main())


def test_engineering_units_and_analog_item_type(server):
    async def main() -> None:
        async with Client(server.url, timeout=5) as client:
            temp = client.get_node(f"ns=2;s={ROBOT}/temperature")
            assert await temp.read_type_definition() == ua.NodeId(ua.ObjectIds.AnalogItemType)
            eu = await (await temp.get_child(["0:EngineeringUnits"])).read_value()
            assert eu.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
            assert eu.UnitId == (ord("C") << 16) | (ord("E") << 8) | ord("L")  # UNECE CEL
            assert eu.DisplayName.Text == "degC"
            eurange = await (await temp.get_child(["0:EURange"])).read_value()
            assert (eurange.Low, eurange.High) == (-20.0, 250.0)
            units = {}
            for tag in ("vibration", "spindle_speed", "power", "energy_total", "count_total"):
                node = client.get_node(f"ns=2;s={ROBOT}/{tag}")
                prop = await node.get_child(["0:EngineeringUnits"])
                units[tag] = (await prop.read_value()).DisplayName.Text
            assert units == {
                "vibration": "mm/s",
                "spindle_speed": "rpm",
                "power": "kW",
                "energy_total": "kWh",
                "count_total": "parts",
            }

    run(main())


def test_source_timestamps_are_utc_and_fresh(server):
    async def main() -> None:
        async with Client(server.url, timeout=5) as client:
            node = client.get_node(f"ns=2;s={ROBOT}/temperature")
            first = await node.read_data_value()
            now = datetime.now(UTC)
            ts = first.SourceTimestamp
            assert ts is not None and ts.utcoffset() == timedelta(0)
            assert now - timedelta(seconds=3) < ts <= now + timedelta(seconds=1)
            assert first.StatusCode.is_good()
            await asyncio.sleep(0.5)
            second = await node.read_data_value()
            assert second.SourceTimestamp > ts  # refreshed every 0.2 s
            assert second.Value.Value == 41.5

    run(main())


def test_scripted_bad_status_fault(server):
    async def main() -> None:
        async with Client(server.url, timeout=5) as client:
            oven = "acme/berlin/paint/line3/oven01"
            dv = await client.get_node(f"ns=2;s={oven}/vibration").read_data_value(
                raise_on_bad_status=False
            )
            assert dv.StatusCode.value == ua.StatusCodes.BadSensorFailure
            assert dv.Value.Value is None  # no stale last value under a BAD status
            assert dv.SourceTimestamp is not None
            good = await client.get_node(f"ns=2;s={oven}/temperature").read_data_value()
            assert good.StatusCode.is_good() and good.Value.Value == 180.25

    run(main())


def test_bad_status_switched_through_the_control_port(server):
    async def main() -> None:
        async with Client(server.url, timeout=5) as client:
            nodeid = f"ns=2;s={ROBOT}/temperature"
            await asyncio.to_thread(
                http, "PUT", f"{server.control}/faults/robot01",
                {"bad_status": "BadCommunicationError"},
            )  # fmt: skip
            dv = await wait_for_status(client, nodeid, ua.StatusCodes.BadCommunicationError)
            assert dv.StatusCode.value == ua.StatusCodes.BadCommunicationError
            assert dv.Value.Value is None
            await asyncio.to_thread(http, "DELETE", f"{server.control}/faults/robot01")
            dv = await wait_for_status(client, nodeid, ua.StatusCodes.Good)
            assert dv.StatusCode.is_good() and dv.Value.Value == 41.5

    run(main())


def test_drop_connection_fault_disconnects_clients(server):
    async def main() -> None:
        client = Client(server.url, timeout=2)
        await client.connect()
        node = client.get_node(f"ns=2;s={ROBOT}/count_total")
        assert await node.read_value() == 100
        await asyncio.to_thread(
            http, "PUT", f"{server.control}/faults/robot01", {"drop_connection": True}
        )
        try:
            with pytest.raises((ConnectionError, asyncio.TimeoutError, ua.UaError)):
                for _ in range(20):
                    await node.read_value()
                    await asyncio.sleep(0.1)
        finally:
            await asyncio.to_thread(http, "DELETE", f"{server.control}/faults/robot01")
            with_timeout = asyncio.wait_for(client.disconnect(), 3)
            try:
                await with_timeout
            except (TimeoutError, ConnectionError, ua.UaError):
                pass
        await asyncio.sleep(0.3)
        async with Client(server.url, timeout=5) as again:  # healthy again: a new session works
            assert await again.get_node(f"ns=2;s={ROBOT}/count_total").read_value() == 100

    run(main())


def test_uaread_command_line_reads_the_documented_values(server):
    def uaread(tag: str) -> str:
        out = subprocess.run(
            [UAREAD, "-u", server.url, "-n", f"ns=2;s={ROBOT}/{tag}"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[-1]

    assert uaread("temperature") == "41.5"
    assert uaread("count_total") == "100"
    assert uaread("state") == "1"
    assert uaread("running") == "True"


def test_secure_endpoint_with_user_login(tmp_path):
    served = start_server(
        tmp_path,
        "--secure", "--user", "operator", "--password", "s3cret",
        "--cert-dir", str(tmp_path / "pki"),
        control=False,
    )  # fmt: skip
    try:
        key, cert = tmp_path / "client_key.pem", tmp_path / "client_cert.der"
        client_uri = "urn:otbridge:test:client"
        run(
            setup_self_signed_certificate(
                key, cert, client_uri, socket.gethostname(),
                [ExtendedKeyUsageOID.CLIENT_AUTH], {"organizationName": "otbridge tests"},
            )
        )  # fmt: skip
        assert (tmp_path / "pki" / "server_cert.der").is_file()

        async def secure_client(password: str) -> Client:
            client = Client(served.url, timeout=5)
            client.application_uri = client_uri
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                certificate=str(cert),
                private_key=str(key),
                mode=ua.MessageSecurityMode.SignAndEncrypt,
            )
            client.set_user("operator")
            client.set_password(password)
            return client

        async def main() -> None:
            endpoints = await Client(served.url, timeout=5).connect_and_get_server_endpoints()
            assert {
                (e.SecurityPolicyUri.rsplit("#", 1)[-1], e.SecurityMode) for e in endpoints
            } == {("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt)}
            assert {t.TokenType for e in endpoints for t in e.UserIdentityTokens} == {
                ua.UserTokenType.UserName
            }
            async with await secure_client("s3cret") as client:
                node = client.get_node(f"ns=2;s={ROBOT}/temperature")
                assert await node.read_value() == 41.5
            with pytest.raises(ua.UaError):  # a wrong password is refused
                async with await secure_client("wrong"):
                    pass
            with pytest.raises(ua.UaError):  # and so is an unencrypted, anonymous client
                async with Client(served.url, timeout=5) as plain:
                    await plain.get_node(f"ns=2;s={ROBOT}/temperature").read_value()

        run(main())
        out = subprocess.run(
            [
                UAREAD, "-u", served.url, "-n", f"ns=2;s={ROBOT}/temperature",
                "--security", f"Basic256Sha256,SignAndEncrypt,{cert},{key}",
                "--user", "operator", "--password", "s3cret",
            ],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == "41.5"
    finally:
        assert stop_server(served) == 0
