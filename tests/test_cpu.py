"""server.pin_cpu (wahookd/cpu.py): the choice of CPU, and the pinner driven by hand.

The last test checks a real daemon's threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest
from daemon_proc import DaemonProcess, free_port

from wahookd import cpu as cpu_module
from wahookd.cpu import (
    CpuPinner,
    CpuTimes,
    PinCpu,
    choose,
    others_load,
    parse_pin_cpu,
    parse_proc_stat,
    pin_mode,
    unpinned,
)

PROC_STAT = """\
cpu  300 0 100 900 20 0 5 0 0 0
cpu0 200 0 50 400 10 0 5 0 0 0
cpu1 100 0 50 500 10 0 0 40 0 0
intr 12345 0 0
ctxt 999
"""


def test_proc_stat_gives_busy_and_total_ticks_per_cpu() -> None:
    times = parse_proc_stat(PROC_STAT)
    # idle and iowait are not busy; steal is (another guest had the CPU)
    assert times.total == {0: 665, 1: 700}
    assert times.busy == {0: 255, 1: 190}


def times(busy: dict[int, int], total: int) -> CpuTimes:
    return CpuTimes(busy, dict.fromkeys(busy, total))


def test_others_load_leaves_out_the_daemons_own_ticks() -> None:
    before = times({0: 0, 1: 0}, 0)
    after = times({0: 90, 1: 30}, 100)
    # 80 of CPU 0's 90 busy ticks were ours
    assert others_load(before, after, 80, 0, {0, 1}) == pytest.approx({0: 0.1, 1: 0.3})
    # tick rounding can make our share exceed the CPU's: never below 0
    assert others_load(before, after, 95, 0, {0, 1})[0] == 0.0
    # CPUs outside the allowed set, or without ticks, are not candidates
    assert set(others_load(before, after, 0, 0, {1, 7})) == {1}


@pytest.mark.parametrize(
    ("loads", "current", "expected"),
    [
        ({0: 0.1, 1: 0.0}, 0, 0),  # quieter by less than the margin: stay
        ({0: 0.6, 1: 0.1}, 0, 1),  # a neighbour keeps CPU 0 busy: move
        ({0: 0.6, 1: 0.5, 2: 0.0}, 0, 2),  # to the quietest
        ({0: 0.5, 1: 0.5}, 1, 1),  # a tie keeps the current one
        ({0: 0.3, 1: 0.2}, 5, 1),  # not on an allowed CPU: the quietest
    ],
)
def test_choose_moves_only_for_a_clearly_quieter_cpu(
    loads: dict[int, float], current: int, expected: int
) -> None:
    assert choose(loads, current) == expected


@pytest.mark.parametrize(("value", "parsed"), [("auto", "auto"), ("off", "off"), (0, 0), (3, 3)])
def test_pin_cpu_values(value: object, parsed: PinCpu) -> None:
    assert parse_pin_cpu(value) == parsed


@pytest.mark.parametrize("value", ["on", "0", -1, True, 1.5, [0]])
def test_bad_pin_cpu_values_say_what_is_allowed(value: object) -> None:
    with pytest.raises(ValueError, match=r'expected "auto", "off" or a CPU number'):
        parse_pin_cpu(value)


class Host:
    """A machine the pinner can be driven on: /proc/stat readings set by the test."""

    def __init__(self, cpus: int = 2, start_on: int = 1) -> None:
        self.cpus = cpus
        self.start_on = start_on
        self.busy = dict.fromkeys(range(cpus), 0)
        self.total = 0
        self.own = 0.0
        self.pins: list[tuple[set[int], list[int]]] = []
        self.refuse: OSError | None = None

    def run(self, others: dict[int, int], own_on: int, own: int, ticks: int = 100) -> None:
        """`ticks` pass: other processes keep `others` busy, the daemon `own` on own_on."""
        self.total += ticks
        for cpu in range(self.cpus):
            self.busy[cpu] += others.get(cpu, 0) + (own if cpu == own_on else 0)
        self.own += own

    def pin(self, cpus: set[int], tids: Iterable[int]) -> None:
        if self.refuse is not None and len(cpus) == 1:
            raise self.refuse
        self.pins.append((cpus, list(tids)))

    def pinner(self, mode: PinCpu = "auto") -> CpuPinner:
        return CpuPinner(
            mode,
            allowed=set(range(self.cpus)),
            read_stat=lambda: CpuTimes(dict(self.busy), dict.fromkeys(self.busy, self.total)),
            own_ticks=lambda: self.own,
            current_cpu=lambda: self.start_on,
            thread_ids=lambda: [11, 12, 13],
            pin=self.pin,
            rng=random.Random(7),
        )


async def test_auto_pins_every_thread_to_the_cpu_it_started_on() -> None:
    host = Host(start_on=1)
    pinner = host.pinner()
    pinner.start()
    try:
        assert host.pins == [({1}, [11, 12, 13])]
        assert pinner.cpu == 1
    finally:
        pinner.stop()


def test_auto_moves_off_a_cpu_that_others_keep_busy(caplog: pytest.LogCaptureFixture) -> None:
    host = Host(start_on=0)
    pinner = host.pinner()
    pinner.cpu = 0
    pinner.open_window()
    host.run({0: 10, 1: 5}, own_on=0, own=80)  # the daemon alone is busy: stay
    pinner.decide()
    assert (pinner.cpu, pinner.moves, host.pins) == (0, 0, [])
    pinner.open_window()
    host.run({0: 70, 1: 5}, own_on=0, own=30)  # a neighbour took CPU 0 over
    with caplog.at_level(logging.INFO, logger="wahookd.cpu"):
        pinner.decide()
    assert (pinner.cpu, pinner.moves) == (1, 1)
    assert host.pins == [({1}, [11, 12, 13])]
    assert "threads on CPU 1 of 0,1 (CPU 0 was 70% busy with other work)" in caplog.text


def test_a_decision_needs_a_window_of_its_own() -> None:
    host = Host(start_on=0)
    pinner = host.pinner()
    pinner.cpu = 0
    pinner.open_window()
    host.run({0: 90}, own_on=0, own=10)
    pinner.decide()
    assert pinner.cpu == 1
    # the next decision measures a new window: the old one's load does not move it back
    host.run({1: 90}, own_on=1, own=10)
    pinner.decide()
    assert (pinner.cpu, pinner.moves) == (1, 1)


def test_a_cpu_number_pins_there_and_never_moves() -> None:
    host = Host(start_on=1)
    pinner = host.pinner(0)
    pinner.start()
    assert host.pins == [({0}, [11, 12, 13])]
    assert pinner.cpu == 0
    assert pinner._timer is None  # no looks at the load


def test_a_cpu_outside_the_allowed_set_is_not_pinned(caplog: pytest.LogCaptureFixture) -> None:
    host = Host()
    pinner = host.pinner(9)
    with caplog.at_level(logging.WARNING, logger="wahookd.cpu"):
        pinner.start()
    assert host.pins == []
    assert "server.pin_cpu = 9: this process may only use CPUs 0,1; not pinning" in caplog.text


@pytest.mark.parametrize("mode", ["off", "auto"])
def test_off_or_a_single_cpu_leaves_the_threads_alone(mode: PinCpu) -> None:
    host = Host(cpus=2 if mode == "off" else 1, start_on=0)
    pinner = host.pinner(mode)
    pinner.start()
    assert host.pins == []
    assert pinner.cpu is None


async def test_a_refused_pin_gives_up_and_frees_every_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = Host(start_on=1)
    host.refuse = PermissionError(1, "Operation not permitted")
    pinner = host.pinner()
    with caplog.at_level(logging.WARNING, logger="wahookd.cpu"):
        pinner.start()
    assert pinner.cpu is None
    assert pinner._timer is None
    # a move that failed part-way is undone: every thread may use every CPU again
    assert host.pins == [({0, 1}, [11, 12, 13])]
    assert "cannot keep the threads on CPU 1, the kernel places them" in caplog.text


async def test_auto_keeps_looking_on_its_timers() -> None:
    host = Host(start_on=0)
    pinner = host.pinner()
    pinner.first_check_s = pinner.window_s = pinner.recheck_s = 0.001
    looked = asyncio.Event()
    decide = pinner.decide

    def busy_neighbour_then_decide() -> None:
        host.run({0: 90}, own_on=pinner.cpu or 0, own=10)
        decide()
        looked.set()

    pinner.decide = busy_neighbour_then_decide  # type: ignore[method-assign]
    pinner.start()
    try:
        await asyncio.wait_for(looked.wait(), 5)
        assert pinner.cpu == 1
        looked.clear()
        await asyncio.wait_for(looked.wait(), 5)  # and it looks again
    finally:
        pinner.stop()
    assert pinner._timer is None


def _allowed_of(pid: int) -> dict[int, set[int]]:
    """Each thread of pid and the CPUs it may run on."""
    return {int(tid): os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.parametrize("pin_cpu", ["auto", "off"])
async def test_a_real_daemon_keeps_its_threads_on_one_cpu(tmp_path: Path, pin_cpu: str) -> None:
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if len(allowed) < 2:
        pytest.skip(f"this process may use {len(allowed)} CPU: there is no CPU to choose")
    port = free_port()
    config = tmp_path / "wahookd.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\npin_cpu = "{pin_cpu}"\n'
        f'[storage]\npath = "{tmp_path / "w.db"}"\n[auth]\njwt_secret = "s"\n'
    )
    daemon = DaemonProcess(config, port, tmp_path)
    await daemon.start()
    try:
        assert daemon.proc is not None
        threads = _allowed_of(daemon.proc.pid)
        assert len(threads) >= 3  # the loop and the store's threads, at least
        masks = [frozenset(cpus) for cpus in threads.values()]
        if pin_cpu == "auto":
            # the store's threads, started after the pin, share the loop thread's CPU;
            # the WAL checkpointer alone runs anywhere
            pinned = set(masks) - {frozenset(allowed)}
            assert len(pinned) == 1
            (cpu,) = pinned.pop()
            assert cpu in allowed
            assert masks.count(frozenset(allowed)) == 1
            assert masks.count(frozenset({cpu})) == len(masks) - 1
            assert f"threads on CPU {cpu} of " in daemon.log()
        else:
            assert set(masks) == {frozenset(allowed)}
            assert "threads on CPU" not in daemon.log()
    finally:
        assert await daemon.stop() == 0


@pytest.mark.parametrize(
    ("configured", "backend", "mode"),
    [("auto", "sqlite", "auto"), ("auto", "postgres", "off"), (1, "postgres", 1)],
)
def test_auto_pins_only_where_threads_share_the_gil(
    configured: PinCpu, backend: str, mode: PinCpu
) -> None:
    assert pin_mode(configured, backend) == mode


def test_an_unpinned_thread_is_left_out_of_the_moves() -> None:
    inside, leave = threading.Event(), threading.Event()
    native: list[int] = []

    def checkpointer() -> None:
        with unpinned():
            native.append(threading.get_native_id())
            inside.set()
            leave.wait(5)

    thread = threading.Thread(target=checkpointer)
    thread.start()
    try:
        assert inside.wait(5)
        (tid,) = native
        assert tid not in cpu_module._thread_ids()
        assert threading.get_native_id() in cpu_module._thread_ids()
        if hasattr(os, "sched_getaffinity"):
            assert os.sched_getaffinity(tid) == os.sched_getaffinity(0)
    finally:
        leave.set()
        thread.join()
    assert tid not in cpu_module._UNPINNED  # a thread id the kernel reuses is pinned again
