"""Connector config files: validated on load, errors name file, dotted field and valid values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.core.config import ReconnectPolicy, load_config
from connectors.modbus.config import ModbusConfig
from connectors.opcua.config import OpcUaConfig
from otbridge.errors import ConfigError, MissingExtraError
from otbridge.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout

EXAMPLES = PROJECT_ROOT / "connectors" / "examples"
ASSET = "acme/berlin/body/line1/press01"


def modbus_doc(**tag_overrides: Any) -> dict[str, Any]:
    tags: list[dict[str, Any]] = [
        {
            "asset": ASSET,
            "tag": "state",
            "register": "holding",
            "address": 0,
            "data_type": "uint16",
        },
        {"asset": ASSET, "tag": "running", "register": "coil", "address": 0},
        {
            "asset": ASSET,
            "tag": "temperature",
            "register": "holding",
            "address": 6,
            "data_type": "int16",
            "scale": 0.1,
            "unit": "degC",
        },
    ]
    tags[2].update(tag_overrides)
    return {"connector_id": "test", "devices": [{"name": "press01", "port": 5020, "tags": tags}]}


def write(tmp_path: Path, doc: Any, name: str = "connector.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def error_of(path: Path, model: type[Any] = ModbusConfig) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, model)
    return str(info.value)


def test_examples_are_valid() -> None:
    modbus = load_config(EXAMPLES / "modbus.yaml", ModbusConfig)
    assert modbus.devices and all(d.tags for d in modbus.devices)
    opcua = load_config(EXAMPLES / "opcua.yaml", OpcUaConfig)
    assert opcua.devices and all(d.tags for d in opcua.devices)


def test_defaults_and_bit_kinds(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, modbus_doc()), ModbusConfig)
    device = config.devices[0]
    assert (device.host, device.unit_id, device.poll_interval_s, device.max_gap) == (
        "127.0.0.1",
        1,
        1.0,
        0,
    )
    assert device.source == "modbus://127.0.0.1:5020/1"
    running = device.tags[1]
    assert (running.kind, running.data_type) == ("coil", "bool")
    assert device.tags[2].scale == 0.1


def test_bad_data_type_names_file_field_and_valid_values(tmp_path: Path) -> None:
    path = write(tmp_path, modbus_doc(data_type="float16"))
    message = error_of(path)
    assert str(path) in message
    assert "devices[0].tags[2].data_type" in message
    for valid in ("int16", "uint16", "int32", "uint32", "float32", "float64", "bool"):
        assert f"'{valid}'" in message
    assert "float16" in message


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ({"asset": "acme/berlin/press01"}, "devices[0].tags[2].asset", "enterprise/site/area"),
        ({"asset": "acme/berlin/body/line 1/press01"}, "devices[0].tags[2].asset", "5 segments"),
        ({"register": "holdings"}, "devices[0].tags[2].register", "'holding', 'input'"),
        ({"word_order": "middle"}, "devices[0].tags[2].word_order", "'big' or 'little'"),
        ({"address": 70000}, "devices[0].tags[2].address", "less than or equal to 65535"),
        ({"scael": 0.1}, "devices[0].tags[2].scael", "unknown field"),
        ({"data_type": "bool"}, "devices[0].tags[2].bit", "bit number"),
        ({"register": "coil", "data_type": "float32"}, "devices[0].tags[2].data_type", "'bool'"),
    ],
)
def test_each_rule_names_its_field(
    tmp_path: Path, override: dict[str, Any], field: str, words: str
) -> None:
    message = error_of(write(tmp_path, modbus_doc(**override)))
    line = next((ln for ln in message.splitlines() if field + ":" in ln), None)
    assert line is not None, message
    assert words in line


def test_device_level_errors(tmp_path: Path) -> None:
    doc = modbus_doc()
    doc["devices"][0].update(poll_interval_s=0, unit_id=300)
    doc["devices"].append(dict(doc["devices"][0]))
    message = error_of(write(tmp_path, doc))
    assert "devices[0].poll_interval_s: Input should be greater than 0" in message
    assert "devices[1].unit_id" in message
    doc = modbus_doc()
    doc["devices"].append(dict(doc["devices"][0]))
    assert "device name 'press01' appears more than once" in error_of(write(tmp_path, doc))


def test_missing_and_broken_files(tmp_path: Path) -> None:
    assert "no such file" in error_of(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("devices: [\n")
    assert "not valid YAML" in error_of(broken)
    assert "required field is missing" in error_of(write(tmp_path, {"connector_id": "x"}))


@pytest.mark.parametrize(
    ("tag", "field", "words"),
    [
        ({}, "devices[0].tags[0]", "exactly one of node_id or browse_path"),
        ({"node_id": "ns=2;s=T", "browse_path": "2:T"}, "devices[0].tags[0]", "exactly one"),
        ({"node_id": "Temperature"}, "devices[0].tags[0].node_id", "ns=2;s=Name"),
        ({"browse_path": "Plant/Temperature"}, "devices[0].tags[0].browse_path", "idx:Name"),
        (
            {"node_id": "ns=2;s=T", "deadband": {"type": "percent", "value": 150}},
            "devices[0].tags[0].deadband.value",
            "0-100",
        ),
        (
            {"node_id": "ns=2;s=T", "deadband": {"type": "relative", "value": 1}},
            "devices[0].tags[0].deadband.type",
            "'absolute' or 'percent'",
        ),
    ],
)
def test_opcua_rules(tmp_path: Path, tag: dict[str, Any], field: str, words: str) -> None:
    doc = {
        "connector_id": "test",
        "devices": [
            {
                "name": "robot01",
                "endpoint": "opc.tcp://127.0.0.1:4840",
                "tags": [{"asset": ASSET, "tag": "temperature", **tag}],
            }
        ],
    }
    message = error_of(write(tmp_path, doc), OpcUaConfig)
    line = next((ln for ln in message.splitlines() if field + ":" in ln), None)
    assert line is not None, message
    assert words in line


def test_opcua_security_files_must_exist(tmp_path: Path) -> None:
    doc = {
        "connector_id": "test",
        "devices": [
            {
                "name": "robot01",
                "endpoint": "opc.tcp://127.0.0.1:4840",
                "password": "secret",
                "security": {
                    "certificate": str(tmp_path / "client.der"),
                    "private_key": str(tmp_path / "client.pem"),
                    "server_certificate": str(tmp_path / "server.der"),
                },
                "tags": [{"asset": ASSET, "tag": "t", "node_id": "ns=2;s=T"}],
            }
        ],
    }
    message = error_of(write(tmp_path, doc), OpcUaConfig)
    assert "devices[0].security.certificate: no such file" in message
    del doc["devices"][0]["security"]
    message = error_of(write(tmp_path, doc), OpcUaConfig)
    assert "devices[0].username: a password needs a username" in message
    assert "secret" not in message


def test_reconnect_backoff_is_exponential_capped_and_jittered() -> None:
    policy = ReconnectPolicy(initial_delay_s=0.5, max_delay_s=4.0, multiplier=2.0, jitter=0.2)
    assert [policy.delay_s(n, 0.5) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.delay_s(1, 0.0) == pytest.approx(0.8)
    assert policy.delay_s(1, 0.9999999) == pytest.approx(1.2)


def test_kafka_and_registry_overrides_in_the_connector_file(
    tmp_path: Path, settings: Settings
) -> None:
    doc = modbus_doc()
    doc["kafka"] = {"bootstrap_servers": "broker.example:9093", "topic_prefix": "site1."}
    doc["registry"] = {"url": "http://registry.example:8081"}
    config = load_config(write(tmp_path, doc), ModbusConfig)
    effective = config.effective_settings(settings)
    assert effective.kafka.bootstrap_servers == "broker.example:9093"
    assert effective.registry.url == "http://registry.example:8081"
    assert effective.kafka.security_protocol == settings.kafka.security_protocol
    assert config.readings_topic(settings) == "site1.iiot.readings"
    assert settings.kafka.bootstrap_servers != "broker.example:9093"  # the process's untouched
    doc["kafka"] = {"bootstrap_server": "x:1"}
    assert "kafka: unknown field(s) bootstrap_server" in error_of(write(tmp_path, doc))


def test_cli_exits_non_zero_naming_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, modbus_doc(data_type="float16"), "broken.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "otbridge.cli", "connect", "modbus", "--config", str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert str(path) in proc.stderr
    assert "devices[0].tags[2].data_type" in proc.stderr
    assert "'float32'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_values_from_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {
        "connector_id": "test",
        "devices": [
            {
                "name": "robot01",
                "endpoint": "opc.tcp://127.0.0.1:4840",
                "username": "operator",
                "password": "${TEST_OPCUA_PASSWORD}",
                "tags": [{"asset": ASSET, "tag": "t", "node_id": "ns=2;s=T"}],
            }
        ],
    }
    path = write(tmp_path, doc)
    monkeypatch.delenv("TEST_OPCUA_PASSWORD", raising=False)
    assert "devices[0].password: environment variable TEST_OPCUA_PASSWORD is not set" in (
        error_of(path, OpcUaConfig)
    )
    monkeypatch.setenv("TEST_OPCUA_PASSWORD", "s3cret")
    device = load_config(path, OpcUaConfig).devices[0]
    assert device.password is not None
    assert device.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(device)


def test_protocols_are_the_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`otbridge connect <name>` finds a protocol from its folder alone; a missing library
    is a MissingExtraError naming the extra."""
    import connectors
    from connectors.core.protocol import protocols
    from otbridge.cli import build_parser

    assert [(p.name, p.config) for p in protocols()] == [
        ("modbus", ModbusConfig),
        ("opcua", OpcUaConfig),
    ]
    folder = tmp_path / "fakeproto"
    folder.mkdir()
    (folder / "__init__.py").write_text(
        "from connectors.core.protocol import ProtocolSpec\n"
        "from connectors.modbus.config import ModbusConfig\n"
        "PROTOCOL = ProtocolSpec(name='fakeproto', help='a test protocol', config=ModbusConfig,\n"
        "                        connector='connectors.fakeproto.connector', extra='fake')\n"
    )
    (folder / "connector.py").write_text("import otbridge_no_such_library\n")
    monkeypatch.setattr(connectors, "__path__", [*connectors.__path__, str(tmp_path)])
    args = build_parser().parse_args(["connect", "fakeproto", "--config", "x.yaml"])
    assert args.protocol.name == "fakeproto"
    with pytest.raises(MissingExtraError) as info:
        args.protocol.run_function()
    assert "'otbridge_no_such_library'" in str(info.value)
    assert "otbridge[fake]" in str(info.value)


def test_cli_names_a_missing_extra(tmp_path: Path) -> None:
    path = write(tmp_path, modbus_doc())
    code = (
        "import sys; sys.modules['pymodbus'] = None\n"
        "from otbridge.cli import main\n"
        f"sys.exit(main(['connect', 'modbus', '--config', {str(path)!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "otbridge: error: the module 'pymodbus' is not installed; install the extra with "
        "`pip install 'otbridge[modbus]'` (or run `make setup`)"
    ]
