"""The testbed's health sampled during a test: host CPU, the node and delay link processes, socket drops.

A :class:`Sampler` is a thread of the driver that, every ``period_s``
(100 ms), records into long rows ``(t_ns, source, metric, value)``:

- ``cpu``, ``cpu0``, ``cpu1``, ...: ``busy_pct`` and ``steal_pct`` of the
  host, all cores and each, from /proc/stat (100 % is every core of
  ``cpu`` busy);
- ``delay_link``, each node process (``node actor[PID]``, and ``NAME[PID]``
  for what runs in the test's namespaces) and the command's own processes
  (``tool driver[PID]``, ``tool raylet[PID]``, ...: this process and its
  descendants): ``cpu_pct`` of one core (100 % is one core busy all the time), from
  their user and system times;
- the same processes' (but the tool's) ``wait_pct`` each second: the share of the time they
  were runnable that they spent waiting for a CPU (the run delay of
  /proc/PID/task/*/schedstat against it plus their run time): 0 % is a
  CPU whenever they wanted one, 50 % waiting as long as running;
- ``cpu``'s ``pressure_pct``: the share of time some task of the host waited
  for a CPU (/proc/pressure/cpu ``some``);
- ``netns NAME``: the namespace's UDP ``rcvbuf_errors`` and ``in_errors``
  since its first sample (/proc/net/snmp as a thread inside it reads it):
  datagrams its sockets dropped because their receive buffer was full.

``t_ns`` counts from the sampler's start, whose UTC time is ``started``.
The rows go to ``health.parquet``; :mod:`antler.report.verdict` judges them.
Only this host is sampled, so a rig on other hosts (the testbed) has host
rows of the driver's host only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psutil
import pyarrow as pa

from antler.node.launch.netns import NetnsError, enter, inode

PERIOD_S = 0.1
"""PERIOD_S is the sampling period (issue 26: every 100 ms)."""
REFRESH_S = 1.0
"""REFRESH_S is how often the processes watched are looked for again (a node's processes come and go)."""
DELAY_LINK_MODULE = "antler.rig.delay"
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
"""RAY_AGENTS are the Ray processes titled ``ray::`` that are no workers."""
TOOL = "tool "
"""TOOL starts the source of the command's own processes and its Ray's (``tool driver[PID]``, ``tool raylet[PID]``)."""
SCHEMA = pa.schema([("t_ns", pa.int64()), ("source", pa.string()), ("metric", pa.string()), ("value", pa.float64())])
"""SCHEMA is health.parquet's: time since the sampling began (ns), what was measured, which figure, its value."""


def read_proc_stat(text: str | None = None) -> dict[str, list[int]]:
    """Return /proc/stat's CPU lines as jiffies: ``{"cpu": [user, nice, system, idle, iowait, irq, softirq, steal]}``."""
    if text is None:
        with open("/proc/stat") as f:
            text = f.read()
    out = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            break
        name, *fields = line.split()
        out[name] = [int(x) for x in fields[:8]] + [0] * (8 - len(fields[:8]))
    return out


def cpu_use(before: list[int], after: list[int]) -> tuple[float, float]:
    """Return the busy and steal percentages between two /proc/stat samples of one CPU line.

    Busy is everything but idle and iowait (as top's ``us+sy+ni+hi+si+st``);
    steal is time a hypervisor gave another guest. Both are shares of the
    elapsed jiffies, so the ``cpu`` line's 100 % is every core busy.
    """
    delta = [a - b for a, b in zip(after, before, strict=True)]
    total = sum(delta)
    if total <= 0:
        return 0.0, 0.0
    idle = delta[3] + delta[4]
    return 100.0 * (total - idle) / total, 100.0 * delta[7] / total


def schedstat(pid: int) -> tuple[int, int]:
    """Return a process's run time and run delay (ns), summed over its threads (/proc/PID/task/*/schedstat)."""
    run = delay = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
        except OSError:
            continue
        run += int(fields[0])
        delay += int(fields[1])
    return run, delay


def wait_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Return the percentage of runnable time spent waiting, between two schedstat samples (0 when idle)."""
    ran, waited = after[0] - before[0], after[1] - before[1]
    return 100.0 * waited / (ran + waited) if ran + waited > 0 else 0.0


def cpu_pressure_us() -> int | None:
    """Return /proc/pressure/cpu's ``some`` total (µs a task waited for a CPU since boot), None without PSI."""
    try:
        with open("/proc/pressure/cpu") as f:
            first = f.readline().split()
    except OSError:
        return None
    return int(first[-1].split("=")[1]) if first and first[0] == "some" else None


def udp_counters(text: str) -> dict[str, int]:
    """Return the ``Udp:`` counters of a /proc/net/snmp text by name (``RcvbufErrors``, ``InErrors``, ...)."""
    lines = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=False)}


def open_snmp(netns: str) -> int:
    """Open /proc/net/snmp as seen inside a named namespace and return the fd; raises NetnsError.

    A thread enters the namespace and opens ``/proc/thread-self/net/snmp``;
    the open file stays bound to that namespace, so this process reads it
    from anywhere.
    """
    got: list[int | NetnsError] = []

    def opener() -> None:
        try:
            enter(netns)
            got.append(os.open("/proc/thread-self/net/snmp", os.O_RDONLY | os.O_CLOEXEC))
        except NetnsError as e:
            got.append(e)
        except OSError as e:
            got.append(NetnsError(f"{netns}: /proc/net/snmp: {e.strerror}"))

    t = threading.Thread(target=opener, name=f"snmp-{netns}", daemon=True)
    t.start()
    t.join(5)
    if not got:
        raise NetnsError(f"{netns}: opening /proc/net/snmp timed out")
    if isinstance(got[0], NetnsError):
        raise got[0]
    return got[0]


def _read_fd(fd: int) -> str:
    return os.pread(fd, 65536, 0).decode(errors="replace")


class Sampler:
    """A thread that samples the host's and the rig's health until stopped (see the module's docstring).

    ``namespaces`` are the rig's namespace names (their UDP counters and
    processes are watched); ``on_poll`` is called every half second, on
    the sampler's thread, until it returns True (the caller reads the rig
    once it is up, there).
    """

    def __init__(
        self,
        namespaces: list[str],
        period_s: float = PERIOD_S,
        on_poll: Callable[[], bool] | None = None,
    ) -> None:
        self.namespaces = list(namespaces)
        self.period_s = period_s
        self.on_poll = on_poll
        self.started = datetime.now(UTC)
        self.rows: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic_ns()
        self._thread = threading.Thread(target=self._main, name="health-sampler", daemon=True)
        self._snmp: dict[str, int] = {}
        self._snmp_base: dict[str, dict[str, int]] = {}
        self._procs: dict[int, tuple[str, psutil.Process, float]] = {}
        self._sched: dict[int, tuple[int, int]] = {}
        self._pressure: tuple[int, int] | None = None
        self._me = psutil.Process()

    def elapsed_ns(self) -> int:
        """Return the time since sampling began, on the rows' ``t_ns`` axis."""
        return time.monotonic_ns() - self._t0

    def start(self) -> Sampler:
        """Start sampling; it returns the sampler."""
        self._thread.start()
        return self

    def stop(self) -> pa.Table:
        """Stop sampling (after one last sample) and return the rows as a table of SCHEMA."""
        self._stop.set()
        self._thread.join(10)
        for fd in self._snmp.values():
            os.close(fd)
        self._snmp.clear()
        return pa.table(self.rows, schema=SCHEMA)

    def _add(self, t_ns: int, source: str, metric: str, value: float) -> None:
        self.rows["t_ns"].append(t_ns)
        self.rows["source"].append(source)
        self.rows["metric"].append(metric)
        self.rows["value"].append(round(value, 3))

    def _main(self) -> None:
        stat = read_proc_stat()
        next_refresh = next_poll = 0.0
        polling = self.on_poll is not None
        deadline = time.monotonic()
        last = time.monotonic()
        while True:
            deadline += self.period_s
            stopping = self._stop.wait(max(0.0, deadline - time.monotonic()))
            now = time.monotonic()
            t_ns = time.monotonic_ns() - self._t0
            try:
                if now >= next_refresh:
                    self._sample_wait(t_ns)
                    self._refresh()
                    next_refresh = now + REFRESH_S
                stat = self._sample_cpu(t_ns, stat)
                self._sample_procs(t_ns, now - last)
                self._sample_snmp(t_ns)
                if polling and now >= next_poll and self.on_poll is not None:
                    polling = not self.on_poll()
                    next_poll = now + 0.5
            except Exception as e:  # a sampling problem must never end the test
                self.errors.append(f"{type(e).__name__}: {e}")
            last = now
            if stopping:
                return
            if now - deadline > self.period_s:
                deadline = now  # fell behind (a busy host): keep the period, not the lost ticks

    def _sample_cpu(self, t_ns: int, before: dict[str, list[int]]) -> dict[str, list[int]]:
        after = read_proc_stat()
        for name, fields in after.items():
            if name in before:
                busy, steal = cpu_use(before[name], fields)
                self._add(t_ns, name, "busy_pct", busy)
                self._add(t_ns, name, "steal_pct", steal)
        return after

    def _refresh(self) -> None:
        """Find the processes to watch: the delay link and the node processes among this one's descendants."""
        inodes = {i for i in (inode(n) for n in self.namespaces) if i is not None}
        for ns in self.namespaces:
            if ns not in self._snmp and inode(ns) is not None:
                try:
                    self._snmp[ns] = open_snmp(ns)
                except NetnsError as e:
                    self.errors.append(str(e))
        try:
            children = [self._me, *self._me.children(recursive=True)]
        except psutil.Error:
            return
        for p in children:
            if p.pid in self._procs:
                continue
            try:
                cmd = p.cmdline()
                in_rig = os.stat(f"/proc/{p.pid}/ns/net").st_ino in inodes
                times = p.cpu_times()
            except (psutil.Error, OSError):
                continue
            if cmd and DELAY_LINK_MODULE in cmd and "run" in cmd:
                label = "delay_link"
            elif cmd and cmd[0].startswith("ray::") and not cmd[0].startswith(RAY_AGENTS):
                # A Ray worker: a node actor (its title is ray::NodeActor.METHOD in a call, ray::IDLE between).
                label = f"node actor[{p.pid}]"
            elif in_rig:
                label = f"{p.name()}[{p.pid}]"
            else:
                # The command itself and the Ray it started: the test's cost too, though no node's.
                label = f"{TOOL}{'driver' if p.pid == self._me.pid else p.name()}[{p.pid}]"
            self._procs[p.pid] = (label, p, times.user + times.system)

    def _sample_wait(self, t_ns: int) -> None:
        """Sample, each REFRESH_S, the watched processes' wait for a CPU and the host's CPU pressure."""
        for pid, (label, _, _) in self._procs.items():
            if label.startswith(TOOL):
                continue
            now = schedstat(pid)
            if pid in self._sched:
                self._add(t_ns, label, "wait_pct", wait_share(self._sched[pid], now))
            self._sched[pid] = now
        some = cpu_pressure_us()
        if some is not None:
            if self._pressure is not None:
                dt_us = (t_ns - self._pressure[1]) / 1000
                self._add(t_ns, "cpu", "pressure_pct", 100.0 * (some - self._pressure[0]) / dt_us if dt_us else 0.0)
            self._pressure = (some, t_ns)

    def _sample_procs(self, t_ns: int, dt_s: float) -> None:
        if dt_s <= 0:
            return
        for pid, (label, p, used) in list(self._procs.items()):
            try:
                times = p.cpu_times()
            except psutil.Error:
                del self._procs[pid]
                continue
            now_used = times.user + times.system
            self._add(t_ns, label, "cpu_pct", 100.0 * max(0.0, now_used - used) / dt_s)
            self._procs[pid] = (label, p, now_used)

    def _sample_snmp(self, t_ns: int) -> None:
        for ns, fd in self._snmp.items():
            counters = udp_counters(_read_fd(fd))
            base = self._snmp_base.setdefault(ns, counters)
            for key, metric in (("RcvbufErrors", "rcvbuf_errors"), ("InErrors", "in_errors")):
                self._add(t_ns, f"netns {ns}", metric, counters.get(key, 0) - base.get(key, 0))
