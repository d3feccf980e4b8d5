"""Where each direction's bottleneck runs: the kernel's htb and qdisc, the userspace one in the delay link, or none.

:func:`choose` holds the rules of ``rig.bottleneck`` (``auto`` prefers the
kernel, then the userspace queue disciplines, else a config error naming
what each offers); :func:`antler.rig.path.lanes` asks it once per direction.
"""

from __future__ import annotations

import pathlib

from antler.node.spec import ConfigError
from antler.rig.bottleneck import queue_maker, userspace_kinds
from antler.rig.kernel import RigError, check_qdisc, qdiscs


def choose(
    bottleneck: str,
    emulator: str,
    name: str,
    key: str,
    words: list[str],
    rate_bps: int,
    trace: str,
    config_dir: pathlib.Path | None = None,
) -> str:
    """Return where direction name's bottleneck runs: ``kernel``, ``userspace`` or ``none``, raising ConfigError.

    bottleneck and emulator are rig.bottleneck and rig.emulator; key is
    where the direction's values were set (``rig``, ``rig.reverse``), for
    the messages; words its qdisc in tc's words; a trace needs the userspace
    bottleneck; an unshaped reverse direction without a kernel qdisc of its
    kind gets none. The rules are :func:`antler.rig.bottleneck`'s.
    """
    qdisc_key = f"{key}.qdisc"
    kind = "py" if words[0].startswith("py:") else words[0]
    if not rate_bps and not trace and name == "reverse":
        # An unshaped reverse direction gets no qdisc: the veth's own (none).
        return "kernel" if kind in qdiscs() else "none"
    try:
        if not trace and (bottleneck == "kernel" or (bottleneck == "auto" and _kernel_has(kind, rate_bps))):
            check_qdisc(kind)
            if rate_bps:
                check_qdisc("htb", "the bottleneck shaper")
            return "kernel"
    except RigError as e:
        raise ConfigError("", str(e)) from None
    if trace and bottleneck == "kernel":
        raise ConfigError("rig.bottleneck", "kernel: a trace replays only on the userspace bottleneck (use auto)")
    mine = userspace_kinds()
    offers = ", ".join(sorted(mine)) or "none yet"
    if kind not in mine:
        if bottleneck == "userspace" or trace:
            raise ConfigError("", f"{qdisc_key} {kind!r}: the userspace bottleneck lacks it; it implements: {offers}")
        raise ConfigError(
            "",
            f"{qdisc_key} {kind!r}: this kernel lacks it; it has: {', '.join(sorted(qdiscs()))}; "
            f"and the userspace bottleneck lacks it too; it implements: {offers}",
        )
    if not rate_bps and not trace:
        raise ConfigError("", f"{key}.rate 0: the kernel lacks {kind!r}, and the userspace bottleneck needs a rate")
    if emulator == "netem":
        why = "a trace replays" if trace else f"the kernel lacks {kind!r}, and"
        raise ConfigError("", f"rig.emulator netem: {why} the userspace bottleneck runs in the TUN link")
    try:
        queue_maker(" ".join(words), config_dir)
    except ValueError as e:
        raise ConfigError("", f"{qdisc_key} {' '.join(words)!r}: {e}") from None
    return "userspace"


def _kernel_has(kind: str, rate_bps: int) -> bool:
    have = qdiscs()
    return kind in have and (not rate_bps or "htb" in have)
