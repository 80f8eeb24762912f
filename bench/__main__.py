"""``make bench``: run every benchmark module and write one report.

Each ``bench/<name>.py`` is runnable on its own (``python -m bench.<name>``) and
prints a Markdown section; this runner runs them one after another in fresh
processes (so one does not warm up or starve the next), then writes
``bench/results/report.md`` and prints it. ``BENCH_ONLY=vault,gateway`` narrows it.
``bench.launch`` (the whole stack) takes ``BENCH_SCALE=small|full``; ``bench.chaos``
is not a benchmark and runs on its own (``make chaos``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"__init__", "__main__", "baseline", "harness", "chart", "chaos"}


def modules() -> list[str]:
    only = {m.strip() for m in os.environ.get("BENCH_ONLY", "").split(",") if m.strip()}
    names = sorted(p.stem for p in HERE.glob("*.py") if p.stem not in SKIP)
    return [n for n in names if not only or n in only]


def main() -> int:
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    sections = [
        "# POSTD benchmark report",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M UTC} on {os.cpu_count()} cores. Every figure "
        "stands beside a raw limit measured in the same run; ratios carry over between "
        "machines, absolute numbers do not.",
        "",
    ]
    failed = []
    for name in modules():
        print(f"==> bench.{name}", flush=True)
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", f"bench.{name}"], capture_output=True, text=True, check=False
        )
        took = time.monotonic() - started
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stderr[-3000:], file=sys.stderr, flush=True)
            sections += [f"## {name}", "", f"FAILED (exit {proc.returncode}) after {took:.0f}s", ""]
        else:
            sections += [proc.stdout.strip(), "", f"_({name}: {took:.0f}s)_", ""]
    report = results / "report.md"
    report.write_text("\n".join(sections) + "\n")
    print(f"report written to {report.relative_to(HERE.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
