"""One way to load a user's file and report a mistake in it.

Connector, plant, register-map, scenario, rules and assets files are typed pydantic models
(frozen, unknown keys refused). `load_model` reads a YAML file and validates it; any problem
is one `ConfigError` line naming the file, the field as a dotted path
(``devices[0].tags[2].data_type``) and what would be valid. A value that is exactly
``${NAME}`` is the environment variable NAME, so secrets need not be written into files; the
value of an unknown field is never echoed (it may be a misspelt password).
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from otbridge.errors import ConfigError

ASSET_PATH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*){4}$")
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
TAG_RE = r"^[A-Za-z_][A-Za-z0-9_.]*$"


def _check_asset_path(value: str) -> str:
    if not ASSET_PATH_RE.fullmatch(value):
        raise ValueError(
            "an asset path is ISA-95 enterprise/site/area/line/cell: exactly 5 segments of "
            "letters, digits, '_', '-' or '.', e.g. acme/berlin/body/line1/press01"
        )
    return value


AssetPath = Annotated[str, AfterValidator(_check_asset_path)]
TagName = Annotated[str, Field(pattern=TAG_RE, max_length=100)]
Name = Annotated[str, Field(pattern=NAME_RE, max_length=100)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Model(BaseModel):
    """The base of every file model: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


M = TypeVar("M", bound=BaseModel)

ENV_REF_RE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, `${NAME}` values taken from the environment; ConfigError if the
    file is missing, unreadable, not UTF-8 or not YAML."""
    if not path.is_file():
        raise ConfigError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: big maps load fast
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    return _expand_env(data, path, ())


def _expand_env(data: Any, path: Path, loc: tuple[int | str, ...]) -> Any:
    if isinstance(data, dict):
        return {k: _expand_env(v, path, (*loc, str(k))) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_env(v, path, (*loc, i)) for i, v in enumerate(data)]
    if isinstance(data, str) and (match := ENV_REF_RE.match(data)):
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{path}: {dotted(loc)}: environment variable {name} is not set")
        return os.environ[name]
    return data


def load_model(path: Path | str, model: type[M], *, what: str) -> M:
    """Read and validate a YAML file; any problem is a ConfigError naming file and field."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, path, what=what, model=model)) from None


def dotted(loc: Sequence[int | str]) -> str:
    """('devices', 0, 'tags', 2, 'data_type') -> 'devices[0].tags[2].data_type'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            found += _models_in(arg)
    return found


def valid_fields(model: type[BaseModel] | None, loc: Sequence[int | str]) -> list[str]:
    """The field names valid at `loc` (the location of an unknown field) under `model`."""
    candidates: list[type[BaseModel]] = [model] if model is not None else []
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in candidates:
            info = m.model_fields.get(part)
            if info is not None:
                nxt += _models_in(info.annotation)
        candidates = nxt
    names: list[str] = []
    for m in candidates:
        names += [n for n in m.model_fields if n not in names]
    return names


FIELD_HEAD_RE = re.compile(r"[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*")


def format_errors(
    exc: ValidationError,
    path: Path,
    *,
    what: str = "connector config",
    at: tuple[int | str, ...] = (),
    model: type[BaseModel] | None = None,
) -> str:
    """One line: the file, then each error's dotted field (under `at`) and what is wrong or
    valid, `; ` between them: ``invalid WHAT FILE: FIELD: MESSAGE; FIELD: ...``. With the
    `model` that was validated, an unknown field lists the valid ones."""
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        field = dotted((*at, *loc))
        msg = err["msg"].removeprefix("Value error, ")
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            valid = valid_fields(model, loc)
            msg = "unknown field" + (f"; valid: {', '.join(valid)}" if valid else "")
        elif kind == "missing":
            msg = "required field is missing"
        elif kind == "literal_error":
            msg = f"valid: {ctx.get('expected')}"
        # a model-level rule names its field first ("bit: ..."): report it under that field
        head, sep, rest = msg.partition(": ")
        if sep and kind == "value_error" and FIELD_HEAD_RE.fullmatch(head):
            field, msg = (f"{field}.{head}" if field != "(top level)" else head), rest
        # the value of an unknown field is never echoed: it may be a misspelt secret
        quiet = kind in ("missing", "value_error", "extra_forbidden")
        got = "" if quiet else f"; got {err.get('input')!r}"
        named = msg.startswith(f"{field}.")  # "kafka.security_protocol is ...", under kafka
        problems.append(f"{msg}{got}" if named else f"{field}: {msg}{got}")
    return f"invalid {what} {path}: {'; '.join(problems)}"
