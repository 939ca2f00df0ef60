"""Keeping the daemon's threads on one CPU (`server.pin_cpu`).

The event loop and the SQLite threads share Python's GIL, and under load they hand it to
each other many thousand times a second. With the threads on two CPUs every hand-over
wakes a thread on the other CPU (a futex wake and an inter-processor interrupt); on one
CPU it is a plain context switch. The daemon cannot use more than one CPU's worth of
Python anyway. Measured on the 2-CPU bench host: +13 % deliveries/s in (b), +8-16 %
ingest in (c), +7-12 % in (g) (bench/README.md, 2026-12-05).

`"auto"` pins with the SQLite store only: with PostgreSQL the store runs on the loop, no
thread shares the GIL with it, and nothing would be gained. It starts on the CPU the
daemon runs on and about every RECHECK_S looks at how busy each allowed CPU is with
other processes' work. When another CPU is quieter by MOVE_MARGIN of a CPU, all threads
move there, so a busy neighbour does not keep the daemon squeezed. A number pins to
that CPU for good; `"off"` leaves placement to the kernel. Threads started later
inherit the mask of the thread that starts them (Linux), and every move sets it for all
threads again, but for those that asked to stay `unpinned()` (the WAL checkpointer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

log = logging.getLogger(__name__)

PinCpu = int | Literal["auto", "off"]

FIRST_CHECK_S = 2.0  # the first look at the other CPUs' load after the start
RECHECK_S = 10.0  # then about this often (±25 %)
WINDOW_S = 1.0  # each look measures this long
# move only when another CPU was quieter by this share of a CPU: no moving back and forth
# over noise
MOVE_MARGIN = 0.25

# /proc/stat's columns after "cpuN": user nice system idle iowait irq softirq steal ...
_IDLE_COLUMNS = (3, 4)

# threads that stay off the pinned CPU (native ids): see unpinned()
_UNPINNED: set[int] = set()


def parse_pin_cpu(value: object) -> PinCpu:
    """server.pin_cpu's value: "auto", "off" or a CPU number."""
    if value in ("auto", "off"):
        return cast(PinCpu, value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f'expected "auto", "off" or a CPU number (0, 1, ...), got {value!r}')


def pin_mode(configured: PinCpu, backend: str) -> PinCpu:
    """What server.pin_cpu means for this store: "auto" pins only where threads share the GIL."""
    if configured == "auto" and backend != "sqlite":
        return "off"  # asyncpg runs on the loop: no thread hands the GIL back and forth
    return configured


@dataclass(frozen=True)
class CpuTimes:
    """One reading of /proc/stat's per-CPU lines: ticks busy and in all, by CPU."""

    busy: Mapping[int, int]
    total: Mapping[int, int]


def parse_proc_stat(text: str) -> CpuTimes:
    """The per-CPU busy and total ticks in /proc/stat (steal counts as busy: not ours to use)."""
    busy: dict[int, int] = {}
    total: dict[int, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(column) for column in rest.split()]
        cpu = int(name[3:])
        total[cpu] = sum(ticks[:8])
        busy[cpu] = total[cpu] - sum(ticks[i] for i in _IDLE_COLUMNS if i < len(ticks))
    return CpuTimes(busy, total)


def others_load(
    before: CpuTimes, after: CpuTimes, own_ticks: float, on_cpu: int, allowed: Collection[int]
) -> dict[int, float]:
    """Each allowed CPU's share of time spent on other processes' work between two readings.

    The daemon ran on `on_cpu` alone throughout, and took `own_ticks` of it.
    """
    loads: dict[int, float] = {}
    for cpu in allowed:
        elapsed = after.total.get(cpu, 0) - before.total.get(cpu, 0)
        if elapsed <= 0:
            continue  # offline, or no tick yet
        busy: float = after.busy.get(cpu, 0) - before.busy.get(cpu, 0)
        if cpu == on_cpu:
            busy -= own_ticks
        loads[cpu] = min(1.0, max(0.0, busy / elapsed))
    return loads


def choose(loads: Mapping[int, float], current: int, margin: float = MOVE_MARGIN) -> int:
    """The CPU to be on: the quietest, when it beats the current one by `margin`."""
    if current not in loads:
        return min(loads, key=lambda cpu: (loads[cpu], cpu)) if loads else current
    best = min(loads, key=lambda cpu: (loads[cpu], cpu != current, cpu))
    return best if loads[current] - loads[best] > margin else current


def _read_proc_stat() -> CpuTimes:
    with open("/proc/stat", encoding="ascii") as f:
        return parse_proc_stat(f.read())


def _own_ticks() -> float:
    """This process's CPU time so far, in /proc/stat's ticks."""
    times = os.times()
    return (times.user + times.system) * os.sysconf("SC_CLK_TCK")


def _current_cpu() -> int:
    """The CPU the main thread last ran on (/proc/self/stat's 39th field)."""
    with open("/proc/self/stat", encoding="ascii") as f:
        return int(f.read().rpartition(")")[2].split()[36])


def _allowed_cpus() -> set[int]:
    """The CPUs this process may run on; none where the platform cannot tell (not Linux)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    return set(getaffinity(0)) if getaffinity is not None else set()


# the CPUs the process could use before anything was pinned (empty where unknown)
_STARTED_ON = frozenset(_allowed_cpus())


@contextlib.contextmanager
def unpinned() -> Iterator[None]:
    """Run the calling thread on any allowed CPU, out of the pinner's moves, until the end.

    For a thread that seldom takes the GIL and works long without it (the WAL
    checkpointer): it gains nothing from the loop's CPU and would take time from it.
    """
    tid = threading.get_native_id()
    _UNPINNED.add(tid)
    if _STARTED_ON:  # the thread inherited its starter's mask: widen it again
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, _STARTED_ON)
    try:
        yield
    finally:
        _UNPINNED.discard(tid)


def _thread_ids() -> list[int]:
    return [int(tid) for tid in os.listdir("/proc/self/task") if int(tid) not in _UNPINNED]


def _pin_threads(cpus: set[int], tids: Iterable[int]) -> None:
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            continue  # the thread ended meanwhile


@dataclass
class CpuPinner:
    """Puts the daemon's threads on one CPU and, with "auto", moves them off a busy one.

    Each look measures the CPUs over WINDOW_S just before deciding, and the looks come
    RECHECK_S apart with some jitter: two daemons started together on one CPU do not
    both see the other's load and swap places in step. The readers, the setter and the
    random source are injectable, so tests drive it without /proc, timers or sleeps.
    """

    mode: PinCpu
    allowed: Collection[int] = field(default_factory=_allowed_cpus)
    read_stat: Callable[[], CpuTimes] = _read_proc_stat
    own_ticks: Callable[[], float] = _own_ticks
    current_cpu: Callable[[], int] = _current_cpu
    thread_ids: Callable[[], Iterable[int]] = _thread_ids
    pin: Callable[[set[int], Iterable[int]], None] = _pin_threads
    rng: random.Random = field(default_factory=random.Random)
    first_check_s: float = FIRST_CHECK_S
    window_s: float = WINDOW_S
    recheck_s: float = RECHECK_S
    cpu: int | None = None  # where the threads are now; None: not pinned
    moves: int = 0
    _window: tuple[CpuTimes, float] | None = None
    _timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Pin now; with "auto", look at the other CPUs after first_check_s, then now and then."""
        if self.mode == "off" or len(self.allowed) < 2:
            return  # nothing to choose: the kernel's placement is the only one
        if self.mode != "auto":
            if self.mode not in self.allowed:
                log.warning(
                    "server.pin_cpu = %d: this process may only use CPUs %s; not pinning",
                    self.mode,
                    _cpu_list(self.allowed),
                )
                return
            self._move(self.mode, "server.pin_cpu")
            return
        try:
            first = self.current_cpu()
        except (OSError, ValueError, IndexError):
            first = min(self.allowed)
        if first not in self.allowed:
            first = min(self.allowed)
        if self._move(first, "the CPU it started on"):
            self._later(self.first_check_s, self._open_window)

    def stop(self) -> None:
        """No more looks; the threads stay where they are."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def open_window(self) -> None:
        """Start measuring the CPUs' load for the next decide()."""
        self._window = self._reading()

    def decide(self) -> None:
        """Move to a quieter CPU when the current one was busy with other work meanwhile."""
        now, window, self._window = self._reading(), self._window, None
        if now is None or window is None or self.cpu is None:
            return  # no /proc/stat (a container may hide it): stay where we are
        (before, own_before), (after, own_after) = window, now
        loads = others_load(before, after, own_after - own_before, self.cpu, self.allowed)
        target = choose(loads, self.cpu)
        if target != self.cpu:
            why = f"CPU {self.cpu} was {loads[self.cpu]:.0%} busy with other work"
            if self._move(target, why):
                self.moves += 1

    def _reading(self) -> tuple[CpuTimes, float] | None:
        try:
            return self.read_stat(), self.own_ticks()
        except (OSError, ValueError):
            return None

    def _move(self, cpu: int, why: str) -> bool:
        """Pin every thread to cpu; False (and pinning given up) when the kernel refuses."""
        try:
            self.pin({cpu}, self.thread_ids())
        except OSError as exc:
            log.warning("cannot keep the threads on CPU %d, the kernel places them: %s", cpu, exc)
            self.stop()
            self.cpu = None
            with contextlib.suppress(OSError):  # undo a partial move: no thread stays pinned
                self.pin(set(self.allowed), self.thread_ids())
            return False
        log.info("threads on CPU %d of %s (%s)", cpu, _cpu_list(self.allowed), why)
        self.cpu = cpu
        return True

    def _later(self, delay_s: float, then: Callable[[], None]) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay_s, then)

    def _open_window(self) -> None:
        self.open_window()
        self._later(self.window_s, self._decide)

    def _decide(self) -> None:
        self.decide()
        if self.cpu is not None:
            self._later(self.recheck_s * self.rng.uniform(0.75, 1.25), self._open_window)


def _cpu_list(cpus: Collection[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))
