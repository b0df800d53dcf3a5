"""The Modbus TCP simulator over real sockets: pymodbus' client, raw TCP, and Debian's mbpoll.

mbpoll must be installed (`apt-get install -y mbpoll`); the test fails, not skips, without it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from otbridge.net import free_port
from simulators.core.control import ControlServer
from simulators.core.faults import Fault
from simulators.core.plant import Plant, load_plant
from simulators.core.runtime import ManualClock, PlantRuntime
from simulators.core.scenario import load_scenario
from simulators.modbus.map import MAP_FILE, ModbusMap, RegisterEntry, decode, load_map
from simulators.modbus.server import ModbusSimulator

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout

# exact values, chosen to be exact in float32 too
PRESS01 = {
    "state": 1,
    "count_total": 100,
    "count_good": 97,
    "temperature": 41.5,
    "vibration": 2.25,
    "spindle_speed": 1480.5,
    "power": 37.75,
    "energy_total": 1234.5678,
    "run_seconds": 3600,
}
PRESS02 = {
    "state": 3,
    "failure_mode": 1,
    "count_total": 70000,
    "count_good": 69000,
    "temperature": -12.5,
    "vibration": 9.5,
}
WELD01 = {
    "state": 5,
    "count_total": 123456,
    "count_good": 123000,
    "temperature": 55.25,
    "vibration": 3.5,
    "power": 12.5,
    "energy_total": 42.125,
    "run_seconds": 86400,
}
CP01 = {
    "status": 2,
    "ambient_temperature": -4.5,
    "power": 11.0,
    "session_energy": 12.345,
    "energy_total": 5000.25,
}
SCENARIO = {
    "steps": [
        {"at_s": 0, "machine": "press01", "set": PRESS01},
        {"at_s": 0, "machine": "press02", "set": PRESS02},
        {"at_s": 0, "machine": "weld01", "set": WELD01},
        {"at_s": 0, "machine": "cp01", "set": CP01},
        {"at_s": 0, "machine": "cp02", "set": {"status": 8}},
        {"at_s": 30, "machine": "press01", "set": {"state": 3, "count_total": 115}},
        {"at_s": 40, "machine": "weld01", "fault": {"exception_code": 4}},
        {"at_s": 50, "machine": "weld01", "fault": None},
    ]
}


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant()


@pytest.fixture(scope="module")
def mmap(plant: Plant) -> ModbusMap:
    return load_map(MAP_FILE, plant)


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "scenario.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    return path


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def runtime(plant: Plant, scenario_file: Path, clock: ManualClock) -> PlantRuntime:
    return PlantRuntime(plant, scenario=load_scenario(scenario_file, plant), clock=clock)


def serve(
    runtime: PlantRuntime,
    mmap: ModbusMap,
    body: Callable[[ModbusSimulator, AsyncModbusTcpClient], Awaitable[None]],
    *,
    timeout_s: float = 2.0,
) -> None:
    """Start the simulator on a free port, connect a client, run body(sim, client), stop."""

    async def main() -> None:
        async with ModbusSimulator(runtime, mmap, port=0) as sim:
            client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=timeout_s, retries=0)
            assert await client.connect()
            try:
                await body(sim, client)
            finally:
                client.close()

    run(main())


async def read(client: AsyncModbusTcpClient, unit: int, e: RegisterEntry) -> Any:
    call = {
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
    }[e.kind]
    rr = await call(e.address, count=e.count, device_id=unit)
    assert not rr.isError(), (unit, e.tag, rr)
    return rr.bits[:1] if e.is_bit else rr.registers


def test_every_mapped_value_decodes_to_the_scenario_value(runtime, mmap):
    expected = {1: PRESS01, 2: PRESS02, 3: WELD01, 10: CP01}
    flags = {
        1: {"running": True, "alarm": False},
        2: {"running": False, "alarm": True},
        3: {"running": False, "alarm": False},
        10: {"connected": True, "charging": True, "faulted": False},
        11: {"connected": False, "charging": False, "faulted": True},
    }

    async def body(sim, client):
        for unit_id, unit in mmap.units.items():
            for e in unit.entries:
                value = decode(e, await read(client, unit_id, e))
                want = {**expected.get(unit_id, {}), **flags[unit_id]}.get(e.tag)
                if want is None:  # not scripted: 0 (status 8 for cp02)
                    want = 8 if (unit_id, e.tag) == (11, "status") else 0
                assert value == want, (unit.machine, e.tag)
                assert value == runtime.sample(unit.machine).values[e.tag]

    serve(runtime, mmap, body)


def test_raw_registers_on_the_wire_follow_the_word_and_byte_orders(runtime, mmap):
    def f32(x: float) -> list[int]:
        (a, b) = struct.unpack(">HH", struct.pack(">f", x))
        return [a, b]

    def f64(x: float) -> list[int]:
        return list(struct.unpack(">HHHH", struct.pack(">d", x)))

    async def body(sim, client):
        press01 = (await client.read_holding_registers(0, count=19, device_id=1)).registers
        assert press01 == [
            1,  # state
            0,  # failure_mode
            0, 100,  # count_total uint32 ABCD
            0, 97,  # count_good
            415,  # temperature int16 x10
            0x4010, 0x0000,  # vibration 2.25 float32 ABCD
            0x1000, 0x44B9,  # spindle_speed 1480.5 float32 CDAB
            *f32(37.75),  # power
            *f64(1234.5678),  # energy_total float64 ABCD
            0, 3600,  # run_seconds int32
        ]  # fmt: skip
        press02 = (await client.read_holding_registers(0, count=7, device_id=2)).registers
        assert press02 == [3, 1, 0x0001, 0x1170, 0x0001, 0x0D88, 0xFF83]  # -125 = 0xFF83
        weld = (await client.read_input_registers(100, count=18, device_id=3)).registers
        assert weld == [
            5, 0,
            0xE240, 0x0001,  # 123456 CDAB
            0xE078, 0x0001,  # 123000 = 0x1E078, CDAB
            *f32(55.25)[::-1],  # CDAB
            0x6040, 0x0000,  # vibration 3.5 BADC
            0x0000, 0x4841,  # power 12.5 DCBA
            *f64(42.125)[::-1],  # float64, lowest word first
            0x5180, 0x0001,  # 86400 CDAB
        ]  # fmt: skip
        cp01 = (await client.read_input_registers(0, count=10, device_id=10)).registers
        assert cp01 == [2, 0xFFD3, *f32(11.0), 0, 12345, *f64(5000.25)]  # -45, Wh
        coils = (await client.read_coils(0, count=3, device_id=11)).bits[:3]
        assert coils == [False, False, True]
        discrete = (await client.read_discrete_inputs(0, count=2, device_id=3)).bits[:2]
        assert discrete == [False, False]

    serve(runtime, mmap, body)


def test_scenario_timeline_plays_with_the_clock(runtime, mmap, clock):
    async def body(sim, client):
        clock.t_s = 29.9
        assert (await client.read_holding_registers(0, count=4, device_id=1)).registers == [
            1, 0, 0, 100,
        ]  # fmt: skip
        assert (await client.read_coils(0, count=2, device_id=1)).bits[:2] == [True, False]
        clock.t_s = 30.0
        assert (await client.read_holding_registers(0, count=4, device_id=1)).registers == [
            3, 0, 0, 115,
        ]  # fmt: skip
        assert (await client.read_coils(0, count=2, device_id=1)).bits[:2] == [False, True]
        clock.t_s = 45.0  # scripted fault: exception 4 (device failure)
        rr = await client.read_input_registers(100, count=1, device_id=3)
        assert rr.isError() and rr.exception_code == 4
        clock.t_s = 50.0  # healthy again
        assert (await client.read_input_registers(100, count=1, device_id=3)).registers == [5]

    serve(runtime, mmap, body)


def test_unmapped_addresses_unknown_units_and_writes_are_refused(runtime, mmap):
    async def body(sim, client):
        rr = await client.read_holding_registers(19, count=1, device_id=1)
        assert rr.isError() and rr.exception_code == 2  # illegal data address
        rr = await client.read_holding_registers(17, count=3, device_id=1)  # runs past the end
        assert rr.isError() and rr.exception_code == 2
        rr = await client.read_coils(0, count=3, device_id=1)  # two coils mapped
        assert rr.isError() and rr.exception_code == 2
        rr = await client.read_holding_registers(0, count=1, device_id=99)
        assert rr.isError() and rr.exception_code == 11  # gateway: target did not respond
        rr = await client.write_register(0, 2, device_id=1)
        assert rr.isError() and rr.exception_code == 2
        assert (await client.read_holding_registers(0, count=1, device_id=1)).registers == [1]

    serve(runtime, mmap, body)


def test_no_response_fault_makes_the_client_time_out_only_for_that_unit(runtime, mmap):
    async def body(sim, client):
        runtime.set_fault("press01", Fault(no_response=True))
        started = time.monotonic()
        with pytest.raises(ModbusIOException, match="No response"):
            await client.read_holding_registers(0, count=1, device_id=1)
        assert 0.4 <= time.monotonic() - started < 2.0
        # the other units behind the same port still answer
        assert (await client.read_holding_registers(0, count=1, device_id=2)).registers == [3]
        runtime.clear_fault("press01")
        assert (await client.read_holding_registers(0, count=1, device_id=1)).registers == [1]

    serve(runtime, mmap, body, timeout_s=0.5)


def _mbap_read(unit: int, address: int, count: int, tid: int = 7) -> bytes:
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, 3, address, count)


def test_drop_connection_fault_closes_the_tcp_connection(runtime, mmap):
    async def body(sim, client):
        runtime.set_fault("press02", Fault(drop_connection=True))
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        writer.write(_mbap_read(1, 0, 1))  # healthy unit: an answer, exact bytes
        assert await reader.readexactly(11) == struct.pack(">HHHBBBH", 7, 0, 5, 1, 3, 2, 1)
        writer.write(_mbap_read(2, 0, 1))  # dropping unit: the server closes the socket
        try:
            data = await asyncio.wait_for(reader.read(100), 2)
        except ConnectionResetError:
            data = b""
        assert data == b""
        writer.close()
        runtime.clear_fault()
        assert (await client.read_holding_registers(0, count=1, device_id=2)).registers == [3]

    serve(runtime, mmap, body)


def test_delay_exception_swap_and_stuck_faults(runtime, mmap, clock):
    async def body(sim, client):
        runtime.set_fault("cp01", Fault(delay_s=0.4))
        started = time.monotonic()
        rr = await client.read_input_registers(0, count=1, device_id=10)
        assert rr.registers == [2] and time.monotonic() - started >= 0.4
        runtime.set_fault("cp01", Fault(exception_code=11))
        rr = await client.read_input_registers(0, count=1, device_id=10)
        assert rr.isError() and rr.exception_code == 11
        runtime.set_fault("press01", Fault(swap_words=True))
        rr = await client.read_holding_registers(7, count=4, device_id=1)
        assert rr.registers == [0x0000, 0x4010, 0x44B9, 0x1000]  # both floats word-swapped
        runtime.set_fault("press01", Fault(stuck=True))
        clock.t_s = 35.0  # the scenario moved on to 115 parts; the device still says 100
        assert (await client.read_holding_registers(2, count=2, device_id=1)).registers == [0, 100]
        runtime.clear_fault()
        assert (await client.read_holding_registers(2, count=2, device_id=1)).registers == [0, 115]

    serve(runtime, mmap, body)


def test_http_control_port_switches_faults_at_run_time(runtime, mmap):
    def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    async def body(sim, client):
        control = ControlServer(runtime, port=0)
        await control.start()
        try:
            status, payload = await asyncio.to_thread(
                http, "PUT", f"{control.url}/faults/press01", {"exception_code": 6}
            )
            assert (status, payload) == (200, {"ok": True, "fault": {"exception_code": 6}})
            rr = await client.read_holding_registers(0, count=1, device_id=1)
            assert rr.isError() and rr.exception_code == 6
            status, payload = await asyncio.to_thread(http, "GET", f"{control.url}/status")
            assert payload["machines"]["press01"]["fault"] == {"exception_code": 6}
            assert payload["machines"]["press01"]["values"]["temperature"] == 41.5
            status, _ = await asyncio.to_thread(http, "DELETE", f"{control.url}/faults/press01")
            assert status == 200
            assert (await client.read_holding_registers(0, count=1, device_id=1)).registers == [1]
            status, _ = await asyncio.to_thread(
                http, "PUT", f"{control.url}/pins/press01", {"temperature": -3.2}
            )
            assert status == 200
            assert (await client.read_holding_registers(6, count=1, device_id=1)).registers == [
                0x10000 - 32
            ]
            status, payload = await asyncio.to_thread(
                http, "PUT", f"{control.url}/faults/press01", {"no_such": 1}
            )
            assert status == 400 and "unknown fault field(s) no_such" in payload["error"]
        finally:
            await control.stop()

    serve(runtime, mmap, body)


def _mbpoll() -> str:
    path = shutil.which("mbpoll")
    if path is None:
        pytest.fail(
            "mbpoll is not installed: the outside-client test needs Debian's mbpoll "
            "(apt-get install -y mbpoll)"
        )
    return path


def test_mbpoll_reads_the_documented_values(runtime, mmap):
    mbpoll = _mbpoll()

    async def poll(port: int, *args: str) -> dict[int, str]:
        proc = await asyncio.create_subprocess_exec(
            mbpoll, "-m", "tcp", "-p", str(port), "-0", "-1", "-o", "2", *args, "127.0.0.1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        text = out.decode()
        assert proc.returncode == 0, text
        return {int(a): v.strip() for a, v in re.findall(r"^\[(\d+)\]:\s+(.+)$", text, re.M)}

    async def body(sim, client):
        p = sim.port
        # 16-bit holding registers of press01 from PDU address 0 (-0: 0-based)
        assert await poll(p, "-a", "1", "-t", "4", "-r", "0", "-c", "7") == {
            0: "1", 1: "0", 2: "0", 3: "100", 4: "0", 5: "97", 6: "415",
        }  # fmt: skip
        # signed: press02 temperature -12.5 degC is raw -125 (mbpoll shows both readings)
        assert await poll(p, "-a", "2", "-t", "4", "-r", "6") == {6: "65411 (-125)"}
        # float32 ABCD needs -B (big-endian word order); CDAB is mbpoll's default
        assert await poll(p, "-a", "1", "-t", "4:float", "-B", "-r", "7") == {7: "2.25"}
        assert await poll(p, "-a", "1", "-t", "4:float", "-r", "9") == {9: "1480.5"}
        # weld01: uint32 count in input registers, low word first
        assert await poll(p, "-a", "3", "-t", "3:int", "-r", "102") == {102: "123456"}
        # charge points: session energy in Wh (scale 0.001 kWh), coils
        assert await poll(p, "-a", "10", "-t", "3:int", "-B", "-r", "4") == {4: "12345"}
        assert await poll(p, "-a", "11", "-t", "0", "-r", "0", "-c", "3") == {
            0: "0", 1: "0", 2: "1",
        }  # fmt: skip

    serve(runtime, mmap, body)


def test_cli_serves_until_sigterm_and_exits_0(scenario_file):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "otbridge.cli", "sim", "modbus", "--port", str(port),
         "--scenario", str(scenario_file), "--seed", "3"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # ready: the server says so once it listens
            seen.append(line)
            if line.strip() == f"modbus simulator listening on 127.0.0.1:{port}":
                break
        else:
            pytest.fail(f"the simulator exited before listening: {''.join(seen)}")

        async def check() -> None:
            client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
            assert await client.connect()
            rr = await client.read_holding_registers(6, count=1, device_id=1)
            client.close()
            assert rr.registers == [415]

        run(check())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
