"""otbridge.files: the one way a user's file is loaded and a mistake in it reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from otbridge.errors import ConfigError
from otbridge.files import Model, load_model


class Credentials(Model):
    user: str
    password: str


class Device(Model):
    name: str
    credentials: Credentials | None = None


class File(Model):
    devices: list[Device]


def error_of(tmp_path: Path, text: str, model: type[BaseModel] = File) -> str:
    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_model(path, model, what="test file")
    return str(exc.value)


def test_unknown_field_lists_the_valid_ones_and_never_echoes_its_value(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "devices:\n  - name: a\n    credentials: {user: u, pasword: s3cret}\n")
    assert msg == (
        f"invalid test file {tmp_path / 'f.yaml'}: devices[0].credentials.password: "
        "required field is missing; devices[0].credentials.pasword: unknown field; "
        "valid: user, password"
    )
    assert "s3cret" not in msg


def test_wrong_type_names_field_and_value(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "devices:\n  - name: [1]\n")
    assert msg.startswith(f"invalid test file {tmp_path / 'f.yaml'}: devices[0].name: ")
    assert msg.endswith("; got [1]")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("devices: [", "not valid YAML (line 2, column 1)"),
        ("- 1\n", "expected a mapping at the top level, got list"),
        ("devices:\n  - name: ${OTBRIDGE_TEST_UNSET_VAR}\n",
         "devices[0].name: environment variable OTBRIDGE_TEST_UNSET_VAR is not set"),
    ],
)
def test_file_level_mistakes(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_model(tmp_path / "nope.yaml", File, what="test file")


def test_environment_reference_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTBRIDGE_TEST_NAME", "press01")
    path = tmp_path / "f.yaml"
    path.write_text("devices:\n  - name: ${OTBRIDGE_TEST_NAME}\n")
    assert load_model(path, File, what="test file").devices[0].name == "press01"
