"""One small exception hierarchy; every message names the bad value and what would be valid."""


class OtbridgeError(Exception):
    """Base of every error otbridge raises on purpose. The CLI prints it and exits non-zero."""

    exit_code = 2


class ConfigError(OtbridgeError):
    """A configuration value is missing or invalid."""


class StackError(OtbridgeError):
    """A part of the local stack failed to fetch, start, or become healthy."""

    exit_code = 3


class MissingExtraError(OtbridgeError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"the module {module!r} is not installed; install the extra with "
            f"`pip install 'otbridge[{extra}]'` (or run `make setup`)"
        )
