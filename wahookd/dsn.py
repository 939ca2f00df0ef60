"""A PostgreSQL DSN (`[storage] dsn`, `dsn_file`): checking one, reading one, showing one.

A DSN may hold a password: no message here repeats a DSN, and `redact` is the only
form of one that may be logged or shown.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

# a URL of these schemes, or libpq's key=value form
_URL_RE: Final = re.compile(r"postgres(ql)?://\S+\Z")
_KEYWORDS_RE: Final = re.compile(r"\s*\w+\s*=")
HELP: Final = 'use "postgresql://user:password@host:5432/db" or "host=... dbname=..."'


def is_dsn(text: str) -> bool:
    """True for text shaped as a PostgreSQL DSN (the server judges the rest)."""
    return bool(_URL_RE.match(text) or _KEYWORDS_RE.match(text))


def check(text: str) -> str:
    """text when it is a DSN; ValueError (without the text) otherwise."""
    if not is_dsn(text):
        raise ValueError(f"not a PostgreSQL DSN; {HELP}")
    return text


def read_file(path: Path) -> str:
    """The DSN in a file: its first non-empty line. OSError, or ValueError without it."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    dsn = next((line for line in lines if line), "")
    if not is_dsn(dsn):
        raise ValueError(f"'{path}' holds no PostgreSQL DSN; {HELP}")
    return dsn


def resolve(inline: str | None, file: Path | None) -> str:
    """The DSN to connect with: `inline` (storage.dsn), else the one in `file` (read now)."""
    if inline is not None:
        return inline
    if file is None:
        raise ValueError('storage.backend = "postgres" needs storage.dsn or storage.dsn_file')
    return read_file(file)


def redact(dsn: str) -> str:
    """The DSN with its password replaced by `****` (URL or key=value form)."""
    dsn = re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1****@", dsn)
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1****", dsn, flags=re.I)
