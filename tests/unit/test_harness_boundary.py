"""Test and bench code stays out of the bot: no runtime module (the repository root's *.py and
hyperliquid_sim/) imports `harness` or `tests`, and bench/ imports nothing from `tests` (what the
benchmarks share with the tests lives in harness/)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_packages(path: Path) -> set[str]:
    """The top-level names of every absolute import in the file, wherever it sits (also inside a function)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_modules_import_no_test_or_bench_code() -> None:
    runtime = sorted(ROOT.glob("*.py")) + sorted((ROOT / "hyperliquid_sim").glob("*.py"))
    assert len(runtime) > 20 and ROOT / "trading_bot.py" in runtime
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & {"harness", "tests", "bench"})
                 for p in runtime}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_bench_and_harness_import_nothing_from_tests() -> None:
    files = sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "harness").glob("*.py"))
    assert [str(p.relative_to(ROOT)) for p in files if "tests" in imported_packages(p)] == []
