"""Modbus TCP simulator: the plant's Modbus machines as unit (device) ids on one TCP port.

    python -m simulators.modbus.server --port 5020 --seed 7
    python -m simulators.modbus.server --scenario my.yaml --control-port 5021

Every read is answered from the machine's model (or scenario) at that moment, encoded exactly
as `map.yaml` says; faults in force change how the unit answers (see core.faults.Fault).
In-process (tests): `async with ModbusSimulator(runtime, modbus_map, port=0) as sim: sim.port`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.core import common
from simulators.core.common import ListenError, Simulator, build_runtime, serve_simulator
from simulators.core.runtime import PlantRuntime
from simulators.modbus.defaults import DEFAULT_PORT
from simulators.modbus.map import ModbusMap, RegisterEntry, UnitMap, encode, load_map

if TYPE_CHECKING:
    from otbridge.settings import Settings

log = logging.getLogger(__name__)

_KIND_OF_FC = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 4: "input"}
_KIND_OF_FC.update({fc: "holding" for fc in (3, 6, 16, 22, 23)})
_READS = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_WRITES = {5, 6, 15, 16, 22, 23}


class _FaultAwareHandler(ServerRequestHandler):
    """pymodbus' per-connection handler, with the unit's fault applied before answering."""

    server: _SimTcpServer

    async def handle_request(self) -> None:
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is None:
            return
        sim = self.server.sim
        unit = sim.modbus_map.units.get(pdu.dev_id)
        if unit is None:
            # like a gateway with nothing behind that id
            return self._send_exception(pdu, ExcCodes.GATEWAY_NO_RESPONSE)
        fault, _ = sim.runtime.fault_at(unit.machine, sim.runtime.clock.now())
        if fault.drop_connection:
            log.debug("unit %s: fault drop_connection, closing", pdu.dev_id)
            if self.transport is not None:
                self.transport.abort()  # type: ignore[attr-defined]
            return None
        if fault.no_response:
            log.debug("unit %s: fault no_response, ignoring the request", pdu.dev_id)
            return None
        if fault.delay_s > 0:
            await asyncio.sleep(fault.delay_s)
            self.last_pdu, self.last_addr = pdu, addr
        if fault.exception_code:
            return self._send_exception(pdu, fault.exception_code)
        if pdu.function_code in _WRITES:
            return self._send_exception(pdu, ExcCodes.ILLEGAL_ADDRESS)  # the map is read-only
        if pdu.function_code in _READS and not unit.covers(
            _READS[pdu.function_code], pdu.address, pdu.count
        ):
            return self._send_exception(pdu, ExcCodes.ILLEGAL_ADDRESS)
        await super().handle_request()
        return None

    def _send_exception(self, pdu: Any, code: int) -> None:
        response = ExceptionResponse(pdu.function_code, code)
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        self.server_send(response, self.last_addr)


class _SimTcpServer(ModbusTcpServer):
    def __init__(self, sim: ModbusSimulator, devices: list[SimDevice], address: tuple[str, int]):
        self.sim = sim
        super().__init__(devices, address=address)

    def callback_new_connection(self) -> ServerRequestHandler:
        return _FaultAwareHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


def _block(entries: list[RegisterEntry], *, bits: bool) -> list[SimData]:
    """Storage for one register kind; the action fills it in on every read."""
    if bits:
        if not entries:
            return [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)]
        return [SimData(address=e.address, values=[False], datatype=DataType.BITS) for e in entries]
    if not entries:
        return [SimData(address=0, datatype=DataType.INVALID)]
    return [
        SimData(address=e.address, values=[0] * e.count, datatype=DataType.REGISTERS, readonly=True)
        for e in entries
    ]


class ModbusSimulator(Simulator):
    """The Modbus TCP server of a PlantRuntime, serving `modbus_map` (start/stop or async with)."""

    def __init__(
        self,
        runtime: PlantRuntime,
        modbus_map: ModbusMap,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
    ) -> None:
        self.runtime = runtime
        self.modbus_map = modbus_map
        self.host = host
        self.port = port
        self._server: _SimTcpServer | None = None

    def _device(self, unit: UnitMap) -> SimDevice:
        by_kind = {
            k: [e for e in unit.entries if e.kind == k]
            for k in ("coil", "discrete", "holding", "input")
        }
        return SimDevice(
            id=unit.unit_id,
            simdata=(
                _block(by_kind["coil"], bits=True),
                _block(by_kind["discrete"], bits=True),
                _block(by_kind["holding"], bits=False),
                _block(by_kind["input"], bits=False),
            ),
            action=functools.partial(self._refresh, unit, by_kind),
        )

    async def _refresh(
        self,
        unit: UnitMap,
        by_kind: dict[str, list[RegisterEntry]],
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before it answers: write the machine's values now into the block."""
        if set_values is not None:
            return ExcCodes.ILLEGAL_ADDRESS  # the map is read-only
        entries = by_kind.get(_KIND_OF_FC.get(function_code, ""), [])
        sample = self.runtime.sample(unit.machine)
        for e in entries:
            value = sample.values[e.tag]
            if e.is_bit:
                index, bit = e.address // 16 - start_address, e.address % 16
                if value:
                    registers[index] |= 1 << bit
                else:
                    registers[index] &= ~(1 << bit) & 0xFFFF
            else:
                words = encode(e, value, swap_words=sample.fault.swap_words)
                index = e.address - start_address
                registers[index : index + len(words)] = words
        return None

    async def start(self) -> None:
        devices = [self._device(u) for u in self.modbus_map.units.values()]
        self._server = _SimTcpServer(self, devices, (self.host, self.port))
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError:  # pymodbus says only that it could not listen
            raise ListenError(
                f"cannot listen on {self.host}:{self.port} (in use, or not an address here)"
            ) from None
        sockets = getattr(self._server.transport, "sockets", None)
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info(
            "modbus simulator on %s:%s, units %s",
            self.host,
            self.port,
            ", ".join(f"{u.unit_id}={u.machine}" for u in self.modbus_map.units.values()),
        )

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    @property
    def listening(self) -> str:
        return f"modbus simulator listening on {self.host}:{self.port}"


def serve(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Serve the options' plant and map until SIGINT/SIGTERM; 0 then."""
    runtime = build_runtime(args)
    modbus_map = load_map(args.map, runtime.plant)
    return serve_simulator(
        ModbusSimulator(runtime, modbus_map, host=args.host, port=args.port), args
    )


def main(argv: Sequence[str] | None = None) -> int:
    return common.main("modbus", serve, argv)


if __name__ == "__main__":
    sys.exit(main())
