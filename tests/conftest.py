"""Test fixtures: the leak check every test runs under, and namespace helpers.

The leak check fails a test that leaves behind a network namespace, a child
process, a Ray actor or a listening socket that it created. Ray's own
processes (one instance per session) are not counted. Node processes count as
child processes: a local node's is the test's descendant, and so is an SSH
node's, under the sshd the test started (tests/lab/sshd.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.lab import figures
from tests.lab.netns import NetnsFactory, netns_factory, netns_list

_RAY_PROC = re.compile(
    r"raylet|gcs_server|ray::|ray/_private|ray/dashboard|ray/autoscaler|default_worker|log_monitor|runtime_env"
)


def _ours() -> dict[int, str]:
    """_ours returns this process's descendants that are not Ray's own, pid -> cmdline."""
    out: dict[int, str] = {}
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline()) or p.name()
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if _RAY_PROC.search(cmd) or any(_RAY_PROC.search(" ".join(a.cmdline())) for a in _ancestors(p)):
            continue
        out[p.pid] = cmd
    return out


def _ancestors(p: psutil.Process) -> list[psutil.Process]:
    me = os.getpid()
    found = []
    try:
        for a in p.parents():
            if a.pid == me:
                break
            found.append(a)
    except psutil.Error:
        pass
    return found


def _listening() -> set[tuple[str, int]]:
    pids = {os.getpid(), *_ours()}
    socks = set()
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids and c.laddr:
            socks.add((c.laddr.ip, c.laddr.port))
    return socks


def _ray_actors() -> set[str]:
    try:
        import ray

        if not ray.is_initialized():
            return set()
        from ray._private.state import actors

        return {aid for aid, a in actors().items() if a.get("State") in ("ALIVE", 2, "PENDING_CREATION", "RESTARTING")}
    except Exception:
        return set()


# On a machine shared with other test runs (several developers at once),
# ANTLER_TEST_SHARED=1 counts only the namespaces lab.netns.unique_name made in
# this process: others' come and go during our tests. CI runs alone and
# checks every namespace.
_SHARED = os.environ.get("ANTLER_TEST_SHARED") == "1"
_LEAKED_NETNS: set[str] = set()


_created_here: set[str] = set()
"""_created_here names the namespaces this process created through antler's launcher."""


def _track_created(monkeypatch: pytest.MonkeyPatch) -> None:
    from antler.node.launch import netns as launch_netns

    real = launch_netns.create

    def create(name: str) -> None:
        real(name)
        _created_here.add(name)

    monkeypatch.setattr(launch_netns, "create", create)


def _made_here(name: str) -> bool:
    # Test helpers name theirs letters, this PID, "-" (lab.netns.unique_name):
    # anchored, so another session's PID that ends in ours is not taken for it.
    # The launcher's are tracked.
    return name in _created_here or re.match(rf"[a-zA-Z]*{os.getpid() % 100000}-", name) is not None


@pytest.fixture(scope="session", autouse=True)
def delete_leaked_namespaces() -> Iterator[None]:
    """Remove, after the session, the namespaces tests leaked.

    Not at once: a namespace that appeared during a test may be another
    process's, and deleting it under that process breaks it.
    """
    yield
    for name in sorted(_LEAKED_NETNS & netns_list()):
        os.system(f"ip netns del {name} 2>/dev/null")


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if it leaves namespaces, processes, actors or listeners behind."""
    _track_created(monkeypatch)
    # A test marked no_netns creates no namespaces, so any that appear while it
    # runs belong to other processes on the machine (tests running side by
    # side): they must neither fail it nor be deleted by it.
    check_ns = request.node.get_closest_marker("no_netns") is None
    ns0, procs0, socks0, actors0 = netns_list() if check_ns else set(), set(_ours()), _listening(), _ray_actors()
    yield
    deadline = time.monotonic() + 5
    while True:
        ns = {n for n in netns_list() - ns0 if not _SHARED or _made_here(n)} if check_ns else set()
        procs = {pid: cmd for pid, cmd in _ours().items() if pid not in procs0}
        socks = _listening() - socks0
        actors = _ray_actors() - actors0
        if not (ns or procs or socks or actors) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    problems = []
    if ns:
        problems.append(f"network namespaces left behind: {sorted(ns)}")
        _LEAKED_NETNS.update(ns)
    if procs:
        problems.append(f"child processes left behind: {procs}")
        for pid in procs:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
    if socks:
        problems.append(f"listening sockets left behind: {sorted(socks)}")
    if actors:
        problems.append(f"Ray actors left behind: {sorted(actors)}")
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def netns() -> Iterator[NetnsFactory]:
    """Yield a factory of namespaces and veth links, all deleted after the test."""
    with netns_factory() as f:
        yield f


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Connect the test session to one Ray instance (started once: ~5-10 s here).

    Session-scoped fixtures are set up before the per-test leak check takes
    its snapshot, so Ray's own processes and sockets never count as leaks. Like
    the tool's embedded Ray it ships no code: workers import this checkout.
    """
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(
            address="local",  # its own, as the tool's embedded Ray: never a cluster recorded in /tmp/ray
            include_dashboard=False,
            num_cpus=2,
            object_store_memory=200 * 2**20,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        started = True
    yield
    if started:
        ray.shutdown()


_phases: dict[str, list[pytest.TestReport]] = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note, among the reliability figures, whether this session runs the long variants."""
    if os.environ.get(figures.FIGURES_ENV):
        figures.session(long=os.environ.get("ANTLER_RELIABILITY_LONG") == "1")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record each test's outcome among the reliability figures (tests/lab/figures.py)."""
    if not os.environ.get(figures.FIGURES_ENV):
        return
    phases = _phases.setdefault(report.nodeid, [])
    phases.append(report)
    if report.when != "teardown":
        return
    del _phases[report.nodeid]
    if any(r.failed for r in phases):
        result = "failed"
    elif any(r.skipped for r in phases):
        result = "skipped"
    else:
        result = "passed"
    figures.outcome(report.nodeid, result, sum(r.duration for r in phases))
