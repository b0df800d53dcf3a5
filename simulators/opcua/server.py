"""OPC UA simulator: the plant's OPC UA machines as Objects/Plant/<line>/<machine>/<tag>.

    python -m simulators.opcua.server --port 4840 --seed 7
    python -m simulators.opcua.server --secure --user operator --password secret

Node ids are strings in the plant namespace (`urn:otbridge:plant`): the asset path for a
machine object, `<asset>/<tag>` for a variable, e.g.
ns=2;s=acme/berlin/paint/line3/robot01/temperature.
Analog tags are AnalogItemType variables with EngineeringUnits (UNECE codes, DisplayName = the
unit as in the Modbus map, e.g. degC) and EURange. Values are refreshed every
`update_interval_s` with the sample's UTC source timestamp; a `bad_status` fault sets the
status code (value null), a `drop_connection` fault closes every client connection.
Security is off by default; `secure=True` offers only Basic256Sha256 SignAndEncrypt with a
self-signed certificate generated into `cert_dir` (client certificates are not checked);
`user`/`password` turn off anonymous login.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID

from otbridge.errors import ConfigError
from otbridge.net import free_port
from simulators.core import common
from simulators.core.common import Simulator, build_runtime, serve_simulator
from simulators.core.model import CHARGE_POINT_TAGS, MACHINE_TAGS, TAG_UNITS, Value
from simulators.core.runtime import PlantRuntime
from simulators.opcua.defaults import DEFAULT_CERT_DIR, DEFAULT_PORT, NAMESPACE_URI, PASSWORD_ENV

if TYPE_CHECKING:
    from otbridge.settings import Settings

log = logging.getLogger(__name__)

APPLICATION_URI = "urn:otbridge:simulator:opcua"
UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"

#: our unit -> (UNECE common code, description)
UNECE_UNITS: dict[str, tuple[str, str]] = {
    "degC": ("CEL", "degree Celsius"),
    "mm/s": ("C16", "millimetre per second"),
    "rpm": ("RPM", "revolutions per minute"),
    "kW": ("KWT", "kilowatt"),
    "kWh": ("KWH", "kilowatt hour"),
    "s": ("SEC", "second"),
    "parts": ("H87", "piece"),
}

#: EURange of the analog tags (low, high)
EU_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (-20.0, 250.0),
    "vibration": (0.0, 50.0),
    "spindle_speed": (0.0, 6000.0),
    "power": (0.0, 250.0),
    "energy_total": (0.0, 1.0e9),
    "session_energy": (0.0, 200.0),
    "ambient_temperature": (-40.0, 60.0),
}

_UINT16_TAGS = {"state", "failure_mode", "status"}


def _nid(identifier: str | int, namespace_index: int = 0) -> ua.NodeId:
    return ua.NodeId(identifier, namespace_index)  # type: ignore[arg-type]


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(code)  # type: ignore[arg-type]


def unece_unit_id(code: str) -> int:
    """OPC UA Part 8 UnitId of a UNECE common code ('CEL' -> 4408652)."""
    unit_id = 0
    for ch in code:
        unit_id = (unit_id << 8) | ord(ch)
    return unit_id


def eu_information(unit: str) -> ua.EUInformation:
    code, description = UNECE_UNITS[unit]
    return ua.EUInformation(
        NamespaceUri=UNECE_NAMESPACE,
        UnitId=unece_unit_id(code),
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(description),
    )


def _variant_type(tag: str, py_type: type) -> ua.VariantType:
    if py_type is bool:
        return ua.VariantType.Boolean
    if py_type is str:
        return ua.VariantType.String
    if py_type is float:
        return ua.VariantType.Double
    return ua.VariantType.UInt16 if tag in _UINT16_TAGS else ua.VariantType.UInt32


def _variant(tag: str, value: Value, vtype: ua.VariantType) -> ua.Variant:
    if vtype == ua.VariantType.Double:
        return ua.Variant(float(value), vtype)
    if vtype == ua.VariantType.Boolean:
        return ua.Variant(bool(value), vtype)
    if vtype == ua.VariantType.String:
        return ua.Variant(str(value), vtype)
    limit = 0xFFFF if vtype == ua.VariantType.UInt16 else 0xFFFFFFFF
    return ua.Variant(min(limit, max(0, int(value))), vtype)


class _PasswordUserManager:
    """One user name and password (compared in constant time)."""

    def __init__(self, user: str, password: str) -> None:
        self._user = user.encode()
        self._password = password.encode()

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None or password is None:
            return None
        ok_user = hmac.compare_digest(username.encode(), self._user)
        ok_password = hmac.compare_digest(password.encode(), self._password)
        return User(role=UserRole.User, name=username) if ok_user and ok_password else None


class OpcUaSimulator(Simulator):
    """The OPC UA server of a PlantRuntime (start/stop or async with)."""

    def __init__(
        self,
        runtime: PlantRuntime,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        namespace_uri: str = NAMESPACE_URI,
        secure: bool = False,
        user: str | None = None,
        password: str | None = None,
        cert_dir: Path | None = None,
        update_interval_s: float = 0.5,
    ) -> None:
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self.runtime = runtime
        self.host = host
        self.port = port or free_port(host)
        self.namespace_uri = namespace_uri
        self.secure = secure
        self.user = user
        self.password = password
        self.cert_dir = cert_dir or DEFAULT_CERT_DIR
        self.update_interval_s = update_interval_s
        self.machines = runtime.plant.served_by("opcua")
        self.namespace_index = 0
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        # machine -> [(tag, nodeid, variant type)]
        self._nodes: dict[str, list[tuple[str, ua.NodeId, ua.VariantType]]] = {}

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/"

    @property
    def server_certificate(self) -> Path:
        return self.cert_dir / "server_cert.der"

    async def _setup_security(self, server: Server) -> None:
        if not self.secure:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            return
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.cert_dir / "server_key.pem"
        await setup_self_signed_certificate(
            key_file,
            self.server_certificate,
            APPLICATION_URI,
            socket.gethostname(),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {"countryName": "DE", "organizationName": "otbridge", "localityName": "Berlin"},
        )
        await server.load_certificate(str(self.server_certificate))
        await server.load_private_key(str(key_file))
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])

    async def _add_variable(
        self, parent: ua.NodeId, tag: str, nodeid: ua.NodeId, vtype: ua.VariantType, value: Value
    ) -> None:
        assert self._server is not None
        analog = tag in EU_RANGES
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = nodeid
        item.BrowseName = ua.QualifiedName(tag, self.namespace_index)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = parent
        item.ReferenceTypeId = _nid(ua.ObjectIds.HasComponent)
        item.TypeDefinition = _nid(
            ua.ObjectIds.AnalogItemType if analog else ua.ObjectIds.BaseDataVariableType
        )
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(tag)
        attrs.Description = ua.LocalizedText(tag)
        attrs.DataType = _nid(vtype.value)
        attrs.Value = _variant(tag, value, vtype)
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.AccessLevel = ua.AccessLevel.CurrentRead.mask
        attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
        item.NodeAttributes = attrs
        results = await self._server.iserver.isession.add_nodes([item])
        results[0].StatusCode.check()
        node = self._server.get_node(nodeid)
        path = cast(str, nodeid.Identifier)
        unit = TAG_UNITS.get(tag)
        if unit is not None:
            await node.add_property(
                _nid(f"{path}/EngineeringUnits", self.namespace_index),
                ua.QualifiedName("EngineeringUnits", 0),
                eu_information(unit),
            )
        if analog:
            low, high = EU_RANGES[tag]
            await node.add_property(
                _nid(f"{path}/EURange", self.namespace_index),
                ua.QualifiedName("EURange", 0),
                ua.Range(Low=low, High=high),
            )

    async def _build_address_space(self) -> None:
        assert self._server is not None
        idx = self.namespace_index
        plant = self.runtime.plant
        objects = self._server.nodes.objects
        root = await objects.add_object(
            _nid(f"{plant.enterprise}/{plant.site}", idx), ua.QualifiedName("Plant", idx)
        )
        lines: dict[str, Any] = {}
        for name in self.machines:
            spec = plant.machines.get(name) or plant.charge_points[name]
            line_path = spec.asset.rsplit("/", 1)[0]
            if line_path not in lines:
                lines[line_path] = await root.add_object(
                    _nid(line_path, idx), ua.QualifiedName(spec.line, idx)
                )
            machine = await lines[line_path].add_object(
                _nid(spec.asset, idx), ua.QualifiedName(name, idx)
            )
            tags = MACHINE_TAGS if name in plant.machines else CHARGE_POINT_TAGS
            sample = self.runtime.sample(name)
            entries = []
            for tag, py_type in tags.items():
                vtype = _variant_type(tag, py_type)
                nodeid = _nid(f"{spec.asset}/{tag}", idx)
                await self._add_variable(machine.nodeid, tag, nodeid, vtype, sample.values[tag])
                entries.append((tag, nodeid, vtype))
            self._nodes[name] = entries

    async def refresh(self) -> None:
        """Write every served machine's current sample (values, timestamps, status codes)."""
        assert self._server is not None
        drop = False
        for name, entries in self._nodes.items():
            sample = self.runtime.sample(name)
            drop = drop or sample.fault.drop_connection
            server_ts = datetime.now(UTC)
            for tag, nodeid, vtype in entries:
                if sample.fault.is_bad(tag):
                    status = _status(getattr(ua.StatusCodes, str(sample.fault.bad_status)))
                    variant = ua.Variant()
                else:
                    status = _status(ua.StatusCodes.Good)
                    variant = _variant(tag, sample.values[tag], vtype)
                value = ua.DataValue(
                    Value=variant,
                    StatusCode=status,
                    SourceTimestamp=sample.timestamp,  # type: ignore[arg-type]
                    ServerTimestamp=server_ts,  # type: ignore[arg-type]
                )
                await self._server.write_attribute_value(nodeid, value)
        if drop:
            self.drop_connections()

    def drop_connections(self) -> int:
        """Close every client connection (fault drop_connection); returns how many."""
        assert self._server is not None
        transports = list(self._server.iserver.asyncio_transports)
        for transport in transports:
            transport.close()
        return len(transports)

    async def _update_loop(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval_s)
            try:
                await self.refresh()
            except Exception:  # keep serving; the next tick tries again
                log.exception("opcua simulator: refresh failed")

    async def start(self) -> None:
        user_manager = (
            _PasswordUserManager(self.user, self.password)
            if self.user is not None and self.password is not None
            else None
        )
        server = Server(user_manager=user_manager)  # type: ignore[arg-type]
        self._server = server
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("otbridge plant simulator")
        await server.set_application_uri(APPLICATION_URI)
        await self._setup_security(server)
        server.set_identity_tokens(
            [ua.UserNameIdentityToken] if user_manager else [ua.AnonymousIdentityToken]
        )
        self.namespace_index = await server.register_namespace(self.namespace_uri)
        await self._build_address_space()
        await self.refresh()
        await server.start()
        self._task = asyncio.create_task(self._update_loop(), name="opcua-sim-refresh")
        log.info(
            "opcua simulator on %s (%s), machines %s",
            self.endpoint,
            "Basic256Sha256 SignAndEncrypt" if self.secure else "no security",
            ", ".join(self.machines),
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            await self._server.stop()
            self._server = None

    @property
    def listening(self) -> str:
        return f"opcua simulator listening on {self.endpoint}"


def serve(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Serve the options' plant until SIGINT/SIGTERM; 0 then. The certificates go to
    --cert-dir, else the state folder's sim-pki (otbridge sim), else .otbridge/sim-pki."""
    if args.user is not None and not args.password:
        raise ConfigError(f"--user needs --password (or ${PASSWORD_ENV})")
    cert_dir = args.cert_dir
    if cert_dir is None:
        cert_dir = settings.stack.state_dir / "sim-pki" if settings else DEFAULT_CERT_DIR
    runtime = build_runtime(args)
    sim = OpcUaSimulator(
        runtime,
        host=args.host,
        port=args.port,
        namespace_uri=args.namespace_uri,
        secure=args.secure,
        user=args.user,
        password=args.password if args.user is not None else None,
        cert_dir=cert_dir,
        update_interval_s=args.update_interval_s,
    )
    return serve_simulator(sim, args)


def main(argv: Sequence[str] | None = None) -> int:
    return common.main("opcua", serve, argv)


if __name__ == "__main__":
    sys.exit(main())
