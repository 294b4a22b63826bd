"""The long crash test: `.venv/bin/python bench/crash.py --kills 200 [--seed N] [--entry-order post_only] [--keep DIR]`.

Same harness and checks as tests/integration/test_crash.py (harness/crash.py), many
more kills, about a third of them (--fault-share) with bad answers to some orders (502, reset,
dribble) from a fault proxy. Prints a progress line per run and a summary (with the faulted runs
and the bad answers injected, per kind); exits 1 if any check failed. Logs, configs and the bot's
state of every run are kept (in a temporary directory, or --keep DIR) when a check fails, for the
post-mortem.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.crash import CrashSettings, crash_session, post_only_settings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/crash.py", description="SIGKILL the bot N times; check nothing broke")
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--min-wait", type=float, default=0.3, help="shortest timer kill, seconds after spawn")
    p.add_argument("--max-wait", type=float, default=2.0, help="longest timer kill, seconds after spawn")
    p.add_argument("--fault-share", type=float, default=1 / 3,
                   help="share of the seeded runs whose order answers are mangled (0: none after the fixed tour)")
    p.add_argument("--entry-order", choices=("ioc", "post_only"), default="ioc",
                   help="the bot's trading.entry_order (post_only: resting maker entries on a walk of fewer, larger "
                        "steps; check (f))")
    p.add_argument("--keep", type=Path, default=None, help="keep logs and state in this directory")
    p.add_argument("--quiet", action="store_true", help="no per-run lines")
    args = p.parse_args(argv)
    # A SIGKILL mid-request makes aiohttp log "Error handling request ... Connection lost" with a
    # traceback on the simulator side: expected here, and noise in the summary.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    make = post_only_settings if args.entry_order == "post_only" else CrashSettings
    settings = make(kills=args.kills, seed=args.seed, min_wait_s=args.min_wait, max_wait_s=args.max_wait,
                    fault_share=args.fault_share)
    progress = None if args.quiet else (lambda line: print(line, flush=True))
    where = args.keep or Path(tempfile.mkdtemp(prefix="hlbot-crash-"))
    where.mkdir(parents=True, exist_ok=True)
    report = crash_session(settings, where, progress)
    if args.keep is None and not report.violations:
        shutil.rmtree(where, ignore_errors=True)  # kept on failure, for the post-mortem
        where = None
    print()
    print(f"crash test: {args.kills} kills, seed {args.seed}, {args.entry_order} entries, answer faults on "
          f"~{args.fault_share:.0%} of the seeded runs")
    print(report.summary())
    if where is not None:
        print(f"logs and state: {where}")
    print("PASS" if not report.violations else "FAIL")
    return 0 if not report.violations else 1


if __name__ == "__main__":
    sys.exit(main())
