"""py-spy on the daemon during a measurement, and a text summary of what it saw.

`--profile DIR` makes the suite record (b) with two py-spy processes attached to the
daemon's PID (non-blocking sampling, 100 Hz or $BENCH_PROFILE_RATE): DIR/wahookd-b.svg,
a flame graph of every busy thread, and DIR/wahookd-b.txt, collapsed stacks of the
thread holding the GIL only: the Python work that bounds the daemon (its threads share
one GIL).
`python -m suite.profile DIR/wahookd-b.txt` prints where those samples went: by area
(ingest, send, SQLite thread, ...), then by function on its own (self) and with what
it calls (inclusive). Sampling costs the daemon a little: a profiled run's figures are
for finding hot spots, not for the table.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from .common import say

FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")

# Where a sample's time belongs, by the first of these that its stack contains. The
# order matters: an attempt's outcome is logged from inside `_record`, so logging
# comes before it; the SQLite thread's stacks never contain the others.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the store's connection threads (Connection._serve): their stacks start there
    ("SQLite threads (group commits, claims, loads)", ("store/sqlite/connection.py",)),
    ("logging (one line per attempt)", ("logging/__init__",)),
    ("ingest: POST /api/events handler", ("post_events",)),
    ("outcome: record + requeue", ("Recorder.", "delivery/recorder.py")),
    (
        "send: attempt, HTTP/1.1 client (http1, pool), its callbacks",
        (
            "delivery/sender.py",
            "delivery/http1.py",
            "delivery/pool.py",
            "delivery/headers.py",
            "delivery/signing.py",
            "Scheduler._attempt",
            "Scheduler._begin",
            "Scheduler._answered",
        ),
    ),
    ("scheduler loop: refill, claim, sleep", ("Scheduler.run", "Scheduler.step")),
    ("aiohttp server (parse, respond)", ("web_protocol.py", "http_parser", "web_response")),
)


def py_spy() -> str | None:
    """py-spy beside this interpreter (the venv's [bench] extra), else from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profiler:
    """Two py-spy recorders attached to one PID; stopped with SIGINT so they write."""

    procs: list[asyncio.subprocess.Process]
    outputs: list[Path]

    @classmethod
    async def attach(cls, pid: int, out_dir: Path, label: str) -> Profiler | None:
        """Start recording `pid`; None (and a note) when py-spy is missing."""
        binary = py_spy()
        if binary is None:
            say("py-spy not found: no profile (pip install py-spy, or make bench)")
            return None
        procs, outputs = [], []
        for fmt, ext, extra in (("flamegraph", "svg", []), ("raw", "txt", ["--gil"])):
            out = out_dir / f"{label}.{ext}"
            log = (out_dir / f"{label}.{ext}.log").open("ab")
            procs.append(
                await asyncio.create_subprocess_exec(
                    binary,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    os.environ.get("BENCH_PROFILE_RATE", "100"),
                    "--nonblocking",
                    "--format",
                    fmt,
                    "--output",
                    str(out),
                    *extra,
                    stdout=log,
                    stderr=log,
                )
            )
            log.close()
            outputs.append(out)
        await asyncio.sleep(1.0)  # attaching takes a moment; the measurement waits for it
        return cls(procs, outputs)

    async def stop(self) -> list[Path]:
        """SIGINT (py-spy writes its output), then SIGKILL after 30 s; the files written."""
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        return [p for p in self.outputs if p.exists()]


def _name(frame: str) -> str:
    m = FRAME_RE.match(frame.strip())
    if not m:
        return frame.strip()
    file = m["file"]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
    file = file.split("/wahookd/", 1)[-1] if "/wahookd/" in file else file
    return f"{m['func']} ({file})"


def summarize(collapsed: Path, top: int = 25) -> str:
    """The `top` functions by self and by inclusive samples, as text."""
    own: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        area = next((a for a, keys in AREAS if any(k in stack for k in keys)), "other")
        areas[area] += count
        for name in set(frames):
            incl[name] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "by area:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in areas.most_common()]
    lines += ["", "self (leaf) samples:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive samples:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in incl.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25))
