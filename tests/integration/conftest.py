"""Fixtures shared by the integration tests."""
from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest

from hyperliquid_sim import SimConfig, SimServer


@pytest.fixture
def sim() -> Iterator[SimServer]:
    """The simulator in this process on a free loopback port: no random walk, BTC at 50000."""
    server = SimServer(SimConfig(port=0, seed=7, feed=False, start_prices={"BTC": Decimal("50000")}))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl command; skipped without it)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key
