"""A tiny HTTP control port on 127.0.0.1 to switch faults and pin values at run time.

    GET    /health                  {"ok": true}
    GET    /status                  every machine's values and fault now
    PUT    /faults/<machine>        body: a fault, e.g. {"no_response": true}; {} forces healthy
    DELETE /faults/<machine>        drop the run-time fault (the scenario decides again)
    DELETE /faults                  drop every run-time fault
    PUT    /pins/<machine>          body: {"temperature": 95.0, "state": 3} held until unpinned
    DELETE /pins/<machine>          unpin every tag

<machine> is a machine name (press01), an asset path, or * for every machine (faults only).
`curl -X PUT -d '{"delay_s": 2}' http://127.0.0.1:5021/faults/press01`
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import unquote

from simulators.core.faults import Fault
from simulators.core.plant import PlantError
from simulators.core.runtime import PlantRuntime

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_MAX_BODY = 64 * 1024


class ControlServer:
    def __init__(self, runtime: PlantRuntime, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.runtime = runtime
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").strip()
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode("latin-1").strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = min(int(headers.get("content-length", "0") or 0), _MAX_BODY)
            body = await reader.readexactly(length) if length else b""
            method, _, rest = request_line.partition(" ")
            path = unquote(rest.partition(" ")[0].split("?")[0])
            status, payload = self.dispatch(method.upper(), path, body)
        except (ValueError, asyncio.IncompleteReadError) as exc:
            status, payload = 400, {"error": f"malformed request: {exc}"}
        data = json.dumps(payload, default=str).encode()
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + data
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """Route one request; returns (HTTP status, JSON payload)."""
        parts = [p for p in path.split("/") if p]
        rt = self.runtime
        try:
            data: Any = json.loads(body) if body.strip() else {}
            if parts == ["health"] and method == "GET":
                return 200, {"ok": True}
            if parts == ["status"] and method == "GET":
                return 200, rt.status()
            if parts[:1] == ["faults"]:
                machine = "/".join(parts[1:])
                if method == "DELETE":
                    rt.clear_fault(machine or None)
                    log.info("control: run-time fault cleared on %s", machine or "every machine")
                    return 200, {"ok": True}
                if method == "PUT" and machine:
                    fault = Fault.from_dict(data, source=f"PUT {path}")
                    rt.set_fault(machine, fault)
                    log.info("control: fault on %s: %s", machine, fault.to_dict() or "healthy")
                    return 200, {"ok": True, "fault": fault.to_dict()}
                return 405, {
                    "error": f"{method} /faults/<machine> is not supported; use PUT or DELETE"
                }
            if parts[:1] == ["pins"] and len(parts) > 1:
                machine = "/".join(parts[1:])
                if method == "PUT":
                    if not isinstance(data, dict):
                        return 400, {"error": "body must be a JSON object of tag: value"}
                    rt.pin(machine, data)
                    return 200, {"ok": True}
                if method == "DELETE":
                    rt.unpin(machine)
                    return 200, {"ok": True}
                return 405, {
                    "error": f"{method} /pins/<machine> is not supported; use PUT or DELETE"
                }
        except (PlantError, json.JSONDecodeError) as exc:
            return 400, {"error": str(exc)}
        return 404, {
            "error": f"no route {method} {path}; try GET /status, PUT|DELETE /faults/<machine>, "
            "PUT|DELETE /pins/<machine>"
        }
