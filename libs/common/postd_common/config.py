"""Reading configuration from the environment into frozen settings objects.

Each service's own ``config`` module is the only place that touches ``os.environ``;
it hands the mapping to an :class:`EnvReader`, which collects every problem and
raises one :class:`ConfigError` naming each offending variable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from postd_common.secrets import Secret

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(Exception):
    """Configuration is missing or malformed. The message names every variable at fault."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass
class EnvReader:
    """Typed access to an environment mapping that accumulates errors.

    Call the accessors for every setting, then :meth:`check` once: a service that
    is misconfigured in three ways hears about all three at once.
    """

    environ: Mapping[str, str]
    problems: list[str] = field(default_factory=list)

    def _raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None:
            return None
        return value.strip()

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        value = self._raw(name)
        if value:
            return value
        if required and default is None:
            self.problems.append(f"{name} is required but not set")
            return ""
        return default or ""

    def optional(self, name: str) -> str | None:
        value = self._raw(name)
        return value or None

    def secret(self, name: str, default: str | None = None, *, required: bool = False) -> Secret:
        return Secret(self.text(name, default, required=required))

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        return self._parse(name, default, int, "an integer", minimum)

    def number(self, name: str, default: float, *, minimum: float | None = None) -> float:
        return self._parse(name, default, float, "a number", minimum)

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        self.problems.append(f"{name} must be true or false; got {value!r}")
        return default

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        options = list(choices)
        value = (self._raw(name) or default).lower()
        if value not in options:
            self.problems.append(f"{name} must be one of {', '.join(options)}; got {value!r}")
            return default
        return value

    def path(self, name: str, default: Path | None = None, *, required: bool = False) -> Path:
        value = self.text(name, str(default) if default is not None else None, required=required)
        return Path(value) if value else Path()

    def items(self, name: str, default: Iterable[str] = ()) -> tuple[str, ...]:
        value = self._raw(name)
        if value is None:
            return tuple(default)
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def address(self, name: str, default: str) -> str:
        """A ``host:port`` pair, as gRPC targets and listeners take them."""
        value = self.text(name, default)
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.problems.append(f"{name} must be host:port; got {value!r}")
            return default
        return value

    def _parse(
        self,
        name: str,
        default: T,
        parse: Callable[[str], T],
        what: str,
        minimum: T | None,
    ) -> T:
        value = self._raw(name)
        if value is None or value == "":
            return default
        try:
            parsed = parse(value)
        except ValueError:
            self.problems.append(f"{name} must be {what}; got {value!r}")
            return default
        if minimum is not None and parsed < minimum:  # type: ignore[operator]
            self.problems.append(f"{name} must be at least {minimum}; got {value!r}")
            return default
        return parsed

    def check(self) -> None:
        """Raise :class:`ConfigError` if any accessor found a problem."""
        if self.problems:
            raise ConfigError(self.problems)
