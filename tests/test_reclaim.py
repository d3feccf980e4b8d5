"""Leases and reclaiming: what a killed run left is reclaimed by the next, what a live one owns is never touched."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from antler.node import lease
from antler.node.launch import netns
from antler.node.launch.reclaim import reclaim_left
from antler.node.lease import Proc
from antler.node.nodespec import Netns
from tests.lab import figures
from tests.lab.netns import netns_list, sh, unique_name

# A process that makes what a node makes (a namespace with a command in it, a
# command in a session of its own, with a child) and then just lives.
OWNER = """
import subprocess, sys, time
from antler.node import lease
from antler.node.launch.netns import create
name = sys.argv[1]
create(name)
inside = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "300"], start_new_session=True)
session = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300"], start_new_session=True)
while lease.session_of(session.pid) is None:
    time.sleep(0.01)
lease.take(lease.SESSION, str(session.pid), lease.start_ticks(session.pid), "sh -c 'sleep 300 & sleep 300'")
print(inside.pid, session.pid, flush=True)
time.sleep(300)
"""


class Owner:
    """A process holding a namespace and a session; ``inside`` and ``session`` are its commands' PIDs."""

    def __init__(self, name: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", OWNER, name], stdout=subprocess.PIPE, text=True, env=env or dict(os.environ)
        )
        assert self.proc.stdout is not None
        inside, session = self.proc.stdout.readline().split()
        self.inside, self.session = int(inside), int(session)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def session_members(self) -> list[int]:
        return [p.pid for p in psutil.process_iter() if _sid(p.pid) == self.session and not _gone(p.pid)]


def until_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if not _gone(p)]}"
        time.sleep(0.01)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def name() -> Iterator[str]:
    n = unique_name("rc")
    yield n
    with contextlib.suppress(Exception):
        netns.kill_processes_in(n)
    sh("ip", "netns", "del", n, check=False)
    lease.give_back(lease.NETNS, n)


@pytest.fixture
def owner(name: str) -> Iterator[Owner]:
    o = Owner(name)
    yield o
    o.kill()
    for pid in [o.inside, *o.session_members()]:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    lease.give_back(lease.SESSION, str(o.session))


def test_a_dead_owners_namespace_is_reclaimed_when_its_name_is_created_again(name: str, owner: Owner) -> None:
    owner.kill()
    assert name in netns_list()
    notes: list[str] = []
    assert netns.prepare(Netns(name=name, create=True), "n", notes) == (name, True)
    (note,) = [n for n in notes if name in n]
    assert note.startswith(f"reclaimed network namespace {name!r} left by process {owner.proc.pid} (")
    assert note.endswith("which is gone; killed 1 processes in it")
    until_gone([owner.inside])
    figures.record("leaks", "leases of a killed owner reclaimed when its namespace is made again", 1, "namespaces")
    # The new namespace is this process's, leased to it.
    held = lease.find(lease.NETNS, name)
    assert held is not None and held.owner == Proc.me() and not held.dead()
    netns.remove(name)
    assert lease.find(lease.NETNS, name) is None


def test_what_a_live_owner_holds_is_never_touched(name: str, owner: Owner) -> None:
    ino = netns.inode(name)
    with pytest.raises(netns.NetnsError, match=f"already exists: process {owner.proc.pid} .* still runs"):
        netns.prepare(Netns(name=name, create=True), "n")
    notes = reclaim_left()
    assert not [n for n in notes if name in n or str(owner.session) in n]
    assert netns.inode(name) == ino and not _gone(owner.inside)
    assert len(owner.session_members()) == 3  # sh and its two sleeps
    figures.record("leaks", "a live owner's namespace and 3 processes: left untouched by reclaim", 1, "owners")
    # Once it is gone, the next run reclaims both, a line for each.
    owner.kill()
    notes = reclaim_left()
    assert any(n.startswith(f"reclaimed network namespace {name!r} left by process {owner.proc.pid}") for n in notes)
    assert any(
        n.startswith(f"reclaimed the session of command {owner.session} (sh -c 'sleep 300 & sleep 300') left by")
        and n.endswith("killed 3 processes")
        for n in notes
    )
    assert name not in netns_list()
    until_gone([owner.inside, owner.session])  # a SIGKILL takes a moment to land
    assert not owner.session_members()
    assert lease.find(lease.NETNS, name) is None and lease.find(lease.SESSION, str(owner.session)) is None
    figures.record("leaks", "leases of a dead owner reclaimed (a namespace, a command's session)", 2, "leases")
    figures.record("leaks", "processes of a dead owner's session killed by reclaim", 3, "processes")


def test_a_namespace_antler_ray_did_not_make_is_never_touched(name: str) -> None:
    sh("ip", "netns", "add", name)
    with pytest.raises(netns.NetnsError, match="not made by antler-ray on this host"):
        netns.prepare(Netns(name=name, create=True), "n")
    reclaim_left()
    assert name in netns_list()
    figures.record("leaks", "a namespace antler-ray did not make: left untouched by reclaim", 1, "namespaces")


def test_a_lease_whose_invocation_is_gone_is_dead_though_its_node_still_runs(name: str, tmp_path: Path) -> None:
    # A node process whose command was killed (its Ray worker, say) exits soon;
    # what it holds is reclaimed at once, so the next run is not refused.
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = Proc(gone.pid, 1, lease.boot_id())
    o = Owner(name, env={**os.environ, lease.INVOCATION_ENV: dead.text()})
    try:
        held = lease.find(lease.NETNS, name)
        assert held is not None and held.owner.alive() and held.dead()
        (note,) = [n for n in reclaim_left() if name in n]
        assert note.startswith(f"reclaimed network namespace {name!r} left by process {o.proc.pid}")
        assert f"whose command (process {gone.pid}) is gone" in note
        figures.record("leaks", "leases whose command is gone (node still running) reclaimed", 1, "namespaces")
    finally:
        o.kill()
        for pid in [o.inside, *o.session_members()]:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        lease.give_back(lease.SESSION, str(o.session))


def test_a_process_is_its_pid_and_its_start_time() -> None:
    me = Proc.me()
    assert me.alive()
    assert not Proc(me.pid, me.start + 1, me.boot).alive()  # a reused PID is another process
    assert Proc(me.pid, me.start + 1, "another kernel").alive()  # nothing here can tell
    child = subprocess.Popen(["true"])
    try:
        proc = Proc.of(child.pid)
        assert proc is not None
        deadline = time.monotonic() + 10
        while lease.state_of(child.pid) != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not proc.alive()  # a zombie is gone, though its PID is still taken
    finally:
        child.wait()
