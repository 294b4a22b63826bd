"""Errors a person can act on: every bad path, file, key, port or strategy ends the process with
exit status 2 and one line on stderr naming the key and the path (or value), never a traceback,
and `--check-config` refuses every config that a start refuses. Each case runs twice, as
`--check-config` and as a plain start (`main()` in this process, with the start itself replaced
by a marker); one case of each kind runs in real processes too."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import trading_bot

ROOT = Path(__file__).resolve().parents[2]
A_KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"  # a valid key, never to be shown
SECP256K1_N = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"
KEY_LIKE = re.compile(r"[0-9a-fA-F]{60,}")


def _unwritable_folder(tmp: Path) -> Path:
    """A folder this user cannot create files in (root ignores permissions: a sysfs folder)."""
    if os.geteuid() == 0:
        return Path("/sys/kernel")
    folder = tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def _file(tmp: Path, name: str, content: bytes | str, mode: int = 0o600) -> str:
    path = tmp / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return str(path)


@dataclass
class Case:
    name: str
    make: Callable[[Path], dict]  # the config document (tmp: the case's folder)
    words: tuple[str, ...]        # what the one line must name
    env: dict[str, str] = field(default_factory=dict)
    text: Callable[[Path], str] | None = None  # the config file's raw text instead of the document
    suffix: str = ".json"


CASES = [
    Case("log path under a file", lambda t: {"logging": {"file": _file(t, "plain", "x") + "/bot.log"}},
         ("logging.file", "plain", "is a file")),
    Case("log folder unwritable", lambda t: {"logging": {"file": str(_unwritable_folder(t) / "logs" / "bot.log")}},
         ("logging.file", "bot.log", "cannot create")),
    Case("log path is a folder", lambda t: {"logging": {"file": str(t)}}, ("logging.file", "a directory")),
    Case("state folder unwritable", lambda t: {"state": {"path": str(_unwritable_folder(t) / "bot.db")}},
         ("state.path", "bot.db", "cannot create")),
    Case("state path under a file", lambda t: {"state": {"path": _file(t, "plain", "x") + "/state/bot.db"}},
         ("state.path", "plain", "is a file")),
    Case("state path is a folder", lambda t: {"state": {"path": str(t)}}, ("state.path", "a directory")),
    Case("key file missing", lambda t: {"account": {"private_key_file": str(t / "nope.key")}},
         ("account.private_key_file", "nope.key", "not found")),
    Case("key file is a folder", lambda t: {"account": {"private_key_file": str(t)}},
         ("account.private_key_file", "a directory")),
    Case("key file binary", lambda t: {"account": {"private_key_file": _file(t, "bin.key", bytes(range(200, 232)))}},
         ("account.private_key_file", "bin.key", "binary")),
    # Unreadable whoever reads it (root too): the reading process's own memory, owner-only, EIO at 0.
    Case("key file unreadable", lambda t: {"account": {"private_key_file": "/proc/self/mem"}},
         ("account.private_key_file", "/proc/self/mem", "readable")),
    Case("key file not owner-only", lambda t: {"account": {"private_key_file": _file(t, "open.key", A_KEY, 0o644)}},
         ("account.private_key_file", "open.key", "chmod 600")),
    Case("key file zero", lambda t: {"account": {"private_key_file": _file(t, "zero.key", "0x" + "0" * 64)}},
         ("account.private_key_file", "zero.key", "zero")),
    Case("key file out of range", lambda t: {"account": {"private_key_file": _file(t, "big.key", SECP256K1_N)}},
         ("account.private_key_file", "big.key", "out of range")),
    Case("key env zero", lambda t: {}, ("HL_PRIVATE_KEY", "zero"), env={"HL_PRIVATE_KEY": "0" * 64}),
    Case("key env out of range", lambda t: {}, ("HL_PRIVATE_KEY", "out of range"),
         env={"HL_PRIVATE_KEY": "0x" + "f" * 64}),
    Case("key env not a key", lambda t: {}, ("HL_PRIVATE_KEY", "32-byte"), env={"HL_PRIVATE_KEY": A_KEY[:-2] + "zz"}),
    Case("no key for a live network", lambda t: {"network": "testnet", "dry_run": False},
         ("account.private_key_env", "HL_PRIVATE_KEY", "testnet")),
    Case("health port busy", lambda t: {"health": {"enabled": True, "port": "busy"}},
         ("health.port", "in use")),
    Case("health host not this machine", lambda t: {"health": {"enabled": True, "host": "192.0.2.1", "port": 49151}},
         ("health.host", "192.0.2.1")),
    Case("unknown strategy", lambda t: {"strategy": {"name": "ema_crossover"}},
         ("strategy.name", "ema_crossover", "ema_cross")),
    Case("unknown strategy parameter", lambda t: {"strategy": {"name": "ema_cross", "params": {"fsat": 5}}},
         ("strategy.params.fsat", "fast, slow")),
    Case("mistyped strategy parameter", lambda t: {"strategy": {"name": "ema_cross", "params": {"fast": "9"}}},
         ("strategy.params.fast", "integer", '"9"')),
    Case("fast not below slow", lambda t: {"markets": {"BTC": {}, "ETH": {"strategy": {
        "name": "ema_cross", "params": {"fast": 21, "slow": 21}}}}}, ("markets.ETH.strategy.params.fast", "< slow")),
    Case("duplicate key in JSON", lambda t: {}, ("config.json", '"leverage" twice'),
         text=lambda t: '{"trading": {"leverage": 3, "leverage": 5}}'),
    Case("duplicate key in YAML", lambda t: {}, ("config.yaml", '"leverage" twice', "line 3"),
         text=lambda t: "trading:\n  leverage: 3\n  leverage: 5\n", suffix=".yaml"),
    Case("empty JSON file", lambda t: {}, ("config.json", "empty"), text=lambda t: ""),
    Case("whitespace-only YAML file", lambda t: {}, ("config.yaml", "empty"), text=lambda t: "  \n\n",
         suffix=".yaml"),
    Case("comments-only YAML file", lambda t: {}, ("config.yaml", "only comments"), text=lambda t: "# soon\n",
         suffix=".yaml"),
    Case("a key pasted into a field", lambda t: {"symbol": "0x" + A_KEY}, ("symbol", "hidden")),
    Case("a key pasted into a URL", lambda t: {"api": {"rest_url": A_KEY}}, ("api.rest_url", "hidden")),
]


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A port another socket listens on."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    yield busy.getsockname()[1]
    busy.close()


def _prepare(case: Case, tmp: Path, busy_port: int) -> tuple[Path, dict[str, str]]:
    """The case's config file (state, log beside it unless the case moves them) and environment."""
    doc: dict[str, Any] = {"network": "local", "health": {"enabled": False},
                           "state": {"path": str(tmp / "state" / "bot.db")},
                           "logging": {"file": str(tmp / "logs" / "bot.log")}, "strategy": {"name": "always_long"}}
    for section, values in case.make(tmp).items():
        if isinstance(values, dict) and isinstance(doc.get(section), dict):
            doc[section] = {**doc[section], **values}
        else:
            doc[section] = values
    if doc["health"].get("port") == "busy":
        doc["health"]["port"] = busy_port
    config = tmp / f"config{case.suffix}"
    config.write_text(case.text(tmp) if case.text else json.dumps(doc))
    env = {k: v for k, v in os.environ.items() if k != "HL_PRIVATE_KEY"}
    return config, {**env, **case.env}


def _one_line(code: int | None, stderr: str, case: Case) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert code == 2, stderr
    line = lines[0]
    assert line.startswith("config: "), line
    for word in case.words:
        assert word in line, (word, line)
    assert not KEY_LIKE.search(line), line  # a key-length hex string is never shown


@pytest.mark.parametrize("mode", ["check", "start"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_failure_is_exit_2_and_one_line(case: Case, mode: str, tmp_path: Path, busy_port: int,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    config, _ = _prepare(case, tmp_path, busy_port)
    monkeypatch.delenv("HL_PRIVATE_KEY", raising=False)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    started: list[str] = []
    # Past the checks a start would log and trade: here it only says it got there.
    monkeypatch.setattr(trading_bot, "setup_logging", lambda _config: None)
    monkeypatch.setattr(trading_bot, "run_bot", lambda *_: started.append("run_bot") or 0)
    code = trading_bot.main(["--config", str(config)] + (["--check-config"] if mode == "check" else []))
    assert not started, "the checks let it start"
    captured = capsys.readouterr()
    _one_line(code, captured.err, case)
    assert captured.out == ""


# The same in real processes, one case of each kind: nothing above the checks prints or raises.
PROCESS_CASES = ["log path under a file", "key file binary", "key env zero", "health port busy", "fast not below slow",
                 "duplicate key in YAML"]


def test_each_kind_is_one_line_from_a_real_process(tmp_path: Path, busy_port: int) -> None:
    jobs = []
    for case in (c for c in CASES if c.name in PROCESS_CASES):
        folder = tmp_path / re.sub(r"\W+", "-", case.name)
        folder.mkdir()
        config, env = _prepare(case, folder, busy_port)
        command = [sys.executable, str(ROOT / "trading_bot.py"), "--config", str(config)]
        jobs += [(case, command + extra, env) for extra in (["--check-config"], [])]
    with ThreadPoolExecutor(max_workers=4) as pool:  # all at once: the wait of a few
        runs = [(case, pool.submit(subprocess.run, command, capture_output=True, text=True, timeout=30, cwd=ROOT,
                                   env=env)) for case, command, env in jobs]
        for case, run in runs:
            done = run.result()
            _one_line(done.returncode, done.stderr, case)


def test_the_table_covers_the_issue() -> None:
    assert len(CASES) >= 25
