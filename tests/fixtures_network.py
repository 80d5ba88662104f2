"""Network guards for tests: nothing may leave the machine at test time.

`network_guard` refuses every connection and DNS lookup; `loopback_only_network` allows only
loopback (for tests that talk to servers they start on 127.0.0.1). Both return the list of
refused attempts, so a test can assert it stayed empty. See tests/network_guard.py.
"""

from __future__ import annotations

import pytest

from tests.network_guard import install

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@pytest.fixture
def network_guard(monkeypatch: pytest.MonkeyPatch) -> list:
    """Block every outgoing connection and DNS lookup; record attempts. Hub offline mode is NOT set."""
    attempts: list = []
    install(monkeypatch.setattr, attempts, allow_loopback=False)
    for variable in OFFLINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return attempts


@pytest.fixture
def loopback_only_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Block every connection and DNS lookup except to loopback; record refused attempts."""
    attempts: list = []
    install(monkeypatch.setattr, attempts, allow_loopback=True)
    for variable in OFFLINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return attempts
