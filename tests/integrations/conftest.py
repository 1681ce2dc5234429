"""Shared fixtures of the line-integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integrations.test_sinks import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on loopback."""
    found = Receiver()
    yield found
    found.server.shutdown()
