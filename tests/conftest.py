"""Shared fixtures: a test CA, a TLS receiver, a daemon wired to trust it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from support import Receiver


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture
async def receiver(ca: trustme.CA) -> AsyncIterator[Receiver]:
    """A running TLS receiver on 127.0.0.1."""
    rx = Receiver(ca)
    await rx.start()
    yield rx
    await rx.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh directory for a daemon's files."""
    return tmp_path
