"""Reading the config file's TOML tables: problems are recorded with their key, so every
one gets reported, and converters say what they expected ("expected an integer, got
string")."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar, cast

from wahookd.delivery.netpolicy import Network
from wahookd.units import parse_duration, parse_size

_T = TypeVar("_T")
_N = TypeVar("_N", int, float)

_TOML_TYPES: Final = {"bool": "boolean", "int": "integer", "str": "string", "list": "array"}


def toml_type(value: object) -> str:
    name = type(value).__name__
    return "table" if isinstance(value, dict) else _TOML_TYPES.get(name, name)


@dataclass
class Context:
    where: str
    base_dir: Path
    check_files: bool
    errors: list[str]

    def section(self, doc: Mapping[str, object], name: str) -> Table:
        data = doc.get(name, {})
        if not isinstance(data, dict):
            self.errors.append(f"{self.where}: {name}: expected a table, got {toml_type(data)}")
            data = {}
        return Table(self, name, f"[{name}]", data)


class Table:
    """One TOML table being read; problems are recorded, not raised, so all get reported."""

    def __init__(self, ctx: Context, name: str, header: str, data: Mapping[str, object]) -> None:
        self.ctx, self.name, self.header, self.data = ctx, name, header, data
        self.known: list[str] = []
        self.failed: set[str] = set()

    def error(self, key: str, problem: str) -> None:
        self.failed.add(key)
        self.ctx.errors.append(f"{self.ctx.where}: {self.name}.{key}: {problem}")

    def get(self, key: str, convert: Callable[[object], _T], default: _T) -> _T:
        self.known.append(key)
        if key not in self.data:
            return default
        try:
            return convert(self.data[key])
        except PartError as exc:
            for suffix, problem in exc.parts:
                self.error(key + suffix, problem)
        except ValueError as exc:
            self.error(key, str(exc))
        return default

    def done(self) -> None:
        """Report keys nobody asked for; the known list comes from the keys actually read."""
        for key in self.data:
            if key not in self.known:
                known = ", ".join(self.known)
                self.error(key, f"unknown key {key!r} in {self.header}; known: {known}")

    def file(self, key: str) -> Path | None:
        """An optional file ("" = unset), resolved and, with check_files, proven readable."""
        path = self.get(key, path_of(self.ctx.base_dir, optional=True), None)
        if path is not None and self.ctx.check_files:
            try:
                with path.open("rb"):
                    pass
            except OSError as exc:
                self.error(key, f"cannot read file '{path}': {exc.strerror or exc}")
        return path


class PartError(ValueError):
    """Bad array elements or table entries: each reported as key[1] or key.Name."""

    def __init__(self, parts: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(problem for _, problem in parts))
        self.parts = parts


def expect(value: object, types: type | tuple[type, ...], expected: str) -> None:
    # bool is an int subclass in Python, but `true` is never a number in TOML and vice versa.
    if not isinstance(value, types) or isinstance(value, bool) != (types is bool):
        raise ValueError(f"expected {expected}, got {toml_type(value)}")


def absolute(path: Path) -> Path:
    # Lexical, unlike Path.resolve(): "../x" is tidied but symlinks stay as the operator wrote.
    return Path(os.path.abspath(path))


def string(value: object) -> str:
    expect(value, str, "a string")
    return cast(str, value)


def boolean(value: object) -> bool:
    expect(value, bool, "true or false")
    return cast(bool, value)


def integer(value: object) -> int:
    expect(value, int, "an integer")
    return cast(int, value)


def duration(value: object) -> float:
    expect(value, (str, int, float), 'a duration like "30s" or a number of seconds')
    return parse_duration(value)


def size(value: object) -> int:
    expect(value, (str, int), 'a size like "64KiB" or a number of bytes')
    return parse_size(value)


def positive(convert: Callable[[object], _N]) -> Callable[[object], _N]:
    def check(value: object) -> _N:
        result = convert(value)
        if result <= 0:
            raise ValueError(f"must be greater than 0, got {value!r}")
        return result

    return check


def path_of(base_dir: Path, *, optional: bool) -> Callable[[object], Path | None]:
    def convert(value: object) -> Path | None:
        if (text := string(value)) == "" and optional:
            return None
        if text == "":
            raise ValueError("must not be empty")
        return absolute(base_dir / text)  # an absolute text replaces base_dir

    return convert


def choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if (text := string(value)) not in options:
            raise ValueError(f"unknown value {text!r}; use one of: {', '.join(options)}")
        return text

    return convert


def array(item: Callable[[object], _T]) -> Callable[[object], tuple[_T, ...]]:
    def convert(value: object) -> tuple[_T, ...]:
        expect(value, list, "an array")
        items, problems = [], []
        for index, element in enumerate(cast(list[object], value)):
            try:
                items.append(item(element))
            except ValueError as exc:
                problems.append((f"[{index}]", str(exc)))
        if problems:
            raise PartError(problems)
        return tuple(items)

    return convert


def network(value: object) -> Network:
    try:
        return ipaddress.ip_network(string(value), strict=False)
    except ValueError:
        raise ValueError(f'invalid CIDR {value!r}; use e.g. "127.0.0.0/8" or "fd00::/8"') from None
