"""Test fixtures: the leak check every test runs under, and namespace helpers.

The leak check fails a test that leaves behind a network namespace, a child
process, a Ray actor or a listening socket that it created. Ray's own
processes (one instance per session) are not counted.
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

from tests.nettools import NetnsFactory, netns_factory, netns_list, owned_by_me

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


def _my_netns() -> set[str]:
    # Only namespaces named by this process's unique_name: other sessions on
    # the machine create (and delete) their own meanwhile, and deleting theirs
    # as "leaks" broke their tests.
    return {name for name in netns_list() if owned_by_me(name)}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """No_leaks fails the test if it leaves namespaces, processes, actors or listeners behind."""
    ns0, procs0, socks0, actors0 = _my_netns(), set(_ours()), _listening(), _ray_actors()
    yield
    deadline = time.monotonic() + 5
    while True:
        ns = _my_netns() - ns0
        procs = {pid: cmd for pid, cmd in _ours().items() if pid not in procs0}
        socks = _listening() - socks0
        actors = _ray_actors() - actors0
        if not (ns or procs or socks or actors) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    problems = []
    if ns:
        problems.append(f"network namespaces left behind: {sorted(ns)}")
        for name in ns:
            os.system(f"ip netns del {name} 2>/dev/null")
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
    """Netns yields a factory of namespaces and veth links, all deleted after the test."""
    with netns_factory() as f:
        yield f


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Ray_session connects the test session to one Ray instance (started once: ~5-10 s here).

    Session-scoped fixtures are set up before the per-test leak check takes
    its snapshot, so Ray's own processes and sockets never count as leaks. Like
    the tool's embedded Ray it ships no code: workers import this checkout.
    """
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(
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
