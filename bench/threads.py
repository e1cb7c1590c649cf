"""Threads under load: the README's first command (inpaint the bundled photo, text mask)
with ``--threads 1`` and ``--threads 2`` (every core here, the default), run alone, two
side by side, and beside another busy process, on this machine. Wall seconds per run.
``inpaint`` and ``denoise`` share their work over ``--threads`` plain worker threads with
one torch thread each (``lrrtool/workers.py``); the log before that change, with torch's
OpenMP threads, is in the README ("Threads").

Run: ``python bench/threads.py [--repeats 2] [--limit 300]``.

OpenMP threads spin-wait for each other at every parallel region. When another process
holds a core, a spinning thread wastes its slice while its partner waits, and a run of
many short parallel regions slows by orders of magnitude (the issue that led to the
default saw 12.6 s to 498 s for one run). A run still going after ``--limit`` seconds is
stopped and printed as ``> limit``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command(threads: int, out: Path) -> list[str]:
    photo, mask = ROOT / "samples" / "photo.jpg", ROOT / "samples" / "text-mask.png"
    inpaint = ["inpaint", str(photo), "--mask", str(mask), "-o", str(out), "--overwrite"]
    return [sys.executable, "-m", "lrrtool", *inpaint, "-q", "--threads", str(threads)]


def timed(runs: list[list[str]], limit: float) -> list[str]:
    """Start every command at once; wall seconds of each (or '> limit')."""
    start = time.perf_counter()
    processes = [subprocess.Popen(run) for run in runs]
    seconds = []
    for process in processes:
        try:
            process.wait(timeout=max(limit - (time.perf_counter() - start), 1))
            seconds.append(f"{time.perf_counter() - start:.1f}")
        except subprocess.TimeoutExpired:
            process.kill()
            seconds.append(f"> {limit:.0f}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=float, default=300.0)
    args = parser.parse_args()
    print(f"# bench/threads.py, {os.cpu_count()} cores\n")
    print("| threads | alone | two side by side | beside a busy process |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        out = [Path(tmp) / f"{i}.png" for i in range(2)]
        for threads in (1, 2):
            row = {"alone": [], "pair": [], "busy": []}
            for _ in range(args.repeats):
                row["alone"] += timed([command(threads, out[0])], args.limit)
                row["pair"].append(" / ".join(timed([command(threads, o) for o in out], args.limit)))
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                try:
                    row["busy"] += timed([command(threads, out[0])], args.limit)
                finally:
                    busy.kill()
            print(f"| {threads} | {', '.join(row['alone'])} | {', '.join(row['pair'])} | {', '.join(row['busy'])} |")


if __name__ == "__main__":
    main()
