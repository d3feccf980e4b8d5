"""Reclaiming what a killed run left on a host: its namespaces and the sessions of its commands.

Every namespace a node creates and every command session it starts is
leased (antler.node.lease). A run that ends, however it ends, gives its
leases back as it removes what they name; one that is killed outright cannot.
The next run reclaims them: :func:`reclaim_left` kills and deletes what the
dead leases name and returns one log line for each, never touching a lease
whose owner (or invocation) still runs. The command calls it when it starts,
and each node when it starts on its host; a node creating a namespace whose
name a dead lease holds reclaims that one itself (netns.prepare).

:func:`release_invocation` is the other way round: what the calling
invocation's own nodes hold on this host, removed at once, for a second
Ctrl-C that exits without waiting for the nodes' cleanup.
"""

from __future__ import annotations

import contextlib
import os
import signal

from antler.node import lease
from antler.node.launch import netns
from antler.node.lease import NETNS, SESSION, Lease, Proc


def reclaim_left() -> list[str]:
    """Reclaim the namespaces and sessions of dead leases on this host; it returns a line for each.

    A dead lease whose namespace or session is gone already is forgotten
    without a line. Never raises: a host where nothing can be read reclaims nothing.
    """
    notes: list[str] = []
    for held in lease.leases(NETNS):
        if held.dead():
            notes.extend(_reclaim_netns(held))
    for held in lease.leases(SESSION):
        if held.dead():
            notes.extend(_reclaim_session(held))
    return notes


def release_invocation(inv: Proc) -> list[str]:
    """Remove every namespace and session leased on this host for invocation inv, live or not.

    It returns a line for each. For the command itself, exiting at once: its
    nodes are still running, and are about to be killed with it.
    """
    notes: list[str] = []
    for kind, reclaim in ((SESSION, _reclaim_session), (NETNS, _reclaim_netns)):
        for held in lease.leases(kind):
            if held.invocation == inv or held.owner == inv:
                notes.extend(reclaim(held, dead=False))
    return notes


def _reclaim_netns(held: Lease, dead: bool = True) -> list[str]:
    if netns.inode(held.name) != held.ident:
        lease.give_back(NETNS, held.name)  # deleted already, or another namespace took the name since
        return []
    try:
        return [netns.reclaim(held, dead)]
    except Exception as e:  # reclaiming is a courtesy: it never fails a run
        return [f"could not reclaim network namespace {held.name!r} left by {held.whose()}: {e}"]


def _reclaim_session(held: Lease, dead: bool = True) -> list[str]:
    leader = int(held.name)
    start = lease.start_ticks(leader)
    if start is not None and start != held.ident:
        # The PID names another process now, which Linux allows only once
        # nothing is left in the old session (a session ID pins its PID).
        lease.give_back(SESSION, held.name)
        return []
    killed = kill_session(leader)
    lease.give_back(SESSION, held.name)
    if not killed:
        return []
    what = f" ({held.what})" if held.what else ""
    if not dead:
        return [f"killed the {len(killed)} processes of command {leader}{what} of {held.whose()}"]
    return [
        f"reclaimed the session of command {leader}{what} left by {held.whose()}, {held.why_dead()}: "
        f"killed {len(killed)} processes"
    ]


def kill_session(sid: int) -> list[int]:
    """Kill every process in session sid (but this one); it returns their PIDs."""
    killed = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        if lease.session_of(int(entry)) != sid:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(entry), signal.SIGKILL)
            killed.append(int(entry))
    return killed
