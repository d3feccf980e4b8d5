"""The SSH launcher against a real OpenSSH server on 127.0.0.1: shipping the node, running it, and every fault.

The server (tests/lab/sshd.py) listens on a spare loopback port with a temporary
host key; each test gets its own client HOME (key and known_hosts) and its own
node cache folder on the "host" (ANTLER_NODE_CACHE), deleted afterwards. The
nodes run what a fresh host has (tests/lab/pythons.py): the oldest Python the
node supports (3.9) with no third-party package at all, isolated (``-I``);
so do the local nodes an SSH node launches. The only addresses used are
127.0.0.1 and addresses inside namespaces the tests create.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from antler.cli import main
from antler.node import Duration
from antler.node.items import Batch
from antler.node.launch.ssh.upload import CACHE_ENV
from antler.node.runtime import FLUSH_SECONDS
from antler.results import load
from tests.lab.netns import NetnsFactory, netns_list, unique_name
from tests.lab.pythons import bare_python, old_python, probe, python_version
from tests.lab.sshd import SSHServer, keygen, spare_port, sshd
from tests.lab.trees import errors, local, logs, run_tree, veth, write_experiment

SHIPPED = re.compile(r".*/antler-node-[0-9a-f]{16}/antler")
"""SHIPPED matches where a node's code lies when it runs the shipped zipapp: the folder it unpacked itself into."""
NET = "10.77.13"
"""NET is the /24 these tests put between their namespaces."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """Return the module's sshd on 127.0.0.1 (stopped after the module's tests)."""
    with sshd(tmp_path_factory.mktemp("sshd")) as srv:
        yield srv


@pytest.fixture
def ssh(server: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SSHServer]:
    """Point HOME at a copy of the server's client HOME and the node cache at a fresh folder."""
    home = tmp_path / "home"
    shutil.copytree(server.home, home)
    monkeypatch.setenv("HOME", str(home))
    cache = tmp_path / "node-cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    srv = SSHServer(**{**server.__dict__, "home": home})
    yield srv
    shutil.rmtree(cache, ignore_errors=True)  # what the tests uploaded to the "host"


def ssh_node(srv: SSHServer, node_id: str, netns: str | None = None, **spec: Any) -> dict[str, Any]:
    """Return the config of a node on the test sshd, in a namespace it creates if netns is given."""
    node: dict[str, Any] = {
        "id": node_id,
        "launcher": {"ssh": {"destination": srv.destination, "python": bare_python(), **spec}},
    }
    if netns:
        node["netns"] = {"name": netns, "create": True}
    return node


def test_an_ssh_node_serves_a_packet_flow_in_its_namespace_to_a_local_client(
    ssh: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns_m, ns_c = unique_name("sm"), unique_name("sc")
    run = {
        "serial": [
            {
                "child": {
                    "node": ssh_node(ssh, "mid", ns_m),
                    "serial": [
                        {"system": {"command": "ip netns identify", "stdout": "mid-netns.txt"}},
                        *veth(NET, ns_c, "vm", "vc"),
                        {"packet_server": {"listen_addr": f"{NET}.1:0", "listen_addr_key": "server"}},
                    ],
                }
            },
            {
                "child": {
                    "node": local("client", ns_c),
                    "packet_client": {
                        "addr_key": "server",
                        "flow": "probe",
                        "sender": [
                            {"unresponsive": {"wait": ["10ms"], "length": [160], "duration": "1s", "echo": True}}
                        ],
                    },
                }
            },
        ]
    }
    # Signed packets: the test's HMAC key reaches both nodes over their streams.
    write_experiment(tmp_path / "conf", "sshpkt", run, hmac=True)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--config-dir", str(tmp_path / "conf"), "+experiment=sshpkt"]) == 0
    folder = tmp_path / "results" / "latest" / "experiment-sshpkt"
    res = load(tmp_path / "results" / "latest")["experiment-sshpkt"]
    # The system runner's stdout came back as a file.
    assert (folder / "mid-netns.txt").read_text().strip() == ns_m
    io = res["packet_io"]
    server_rows, client_rows = io[io["server"]], io[~io["server"]]
    assert len(server_rows) >= 90 and len(client_rows) >= 180, "the server echoed the client's ~100 packets"
    assert set(res["log"]["node_id"]) >= {"mid", "client"}
    nodes = {n["id"]: n for n in res.meta["nodes"]}
    mid = nodes["mid"]
    assert mid["launcher"] == "ssh" and mid["host"] == "127.0.0.1" and mid["destination"] == ssh.destination
    assert mid["netns"] == ns_m and mid["netns_created"] and mid["clock_rtt_ns"] > 0 and mid["same_clock"]
    # The node ran the shipped zipapp (unpacked beside it in the host's cache), not this checkout.
    assert SHIPPED.fullmatch(mid["code"]) and mid["code"].startswith(os.environ[CACHE_ENV])
    assert list(Path(mid["code"]).glob("node/__pycache__/process.cpython-*.pyc")), "its bytecode is cached there"
    assert mid["python"].startswith(python_version(bare_python()) + "."), "on the package-free python"
    log = (folder / "log.txt").read_text()
    assert "mid launch: uploaded the node code to 127.0.0.1:" in log
    assert f"mid packet_server: listening on {NET}.1:" in log and "(udp) with HMAC" in log
    assert not {ns_m, ns_c} & netns_list()

    # The second run finds the node code on the host (-a: an incremental run would only link the passed test).
    assert main(["run", "-a", "--config-dir", str(tmp_path / "conf"), "+experiment=sshpkt"]) == 0
    log = (tmp_path / "results" / "latest" / "experiment-sshpkt" / "log.txt").read_text()
    assert "mid launch: node code already at 127.0.0.1:" in log and "upload skipped" in log
    assert "uploaded the node code" not in log


@pytest.mark.ray
@pytest.mark.usefixtures("ray_session")
def test_a_mixed_tree_ray_node_ssh_middlebox_and_local_nodes_under_it(ssh: SSHServer) -> None:
    ns_r, ns_a, ns_b = unique_name("xr"), unique_name("xa"), unique_name("xb")
    run = {
        "serial": [
            {"child": {"node": {"id": "ray", "netns": {"name": ns_r, "create": True}}, "system": {"command": "true"}}},
            {
                "child": {
                    "node": ssh_node(ssh, "mb"),
                    "serial": [
                        {"system": {"command": "echo on the middlebox"}},
                        {
                            "child": {
                                "node": local("lan", ns_a),
                                "serial": [
                                    *veth(NET, ns_r, "va", "vr"),
                                    {"stream_server": {"listen_addr": f"{NET}.1:0", "listen_addr_key": "lan"}},
                                ],
                            }
                        },
                        {"child": {"node": local("quiet", ns_b), "system": {"command": "ip netns identify"}}},
                    ],
                }
            },
            # The server's address found two launches down on the middlebox reaches the Ray node.
            {
                "child": {
                    "node": {"id": "ray", "netns": {"name": ns_r, "create": True}},
                    "stream_client": {"addr_key": "lan", "upload": {"flow": "mix", "duration": "500ms"}},
                }
            },
        ]
    }
    ok, items, launchers, _ = run_tree(run)
    assert ok, errors(items)
    facts = {f["id"]: f for f in launchers.take_facts()}
    assert [facts[n]["launcher"] for n in ("ray", "mb", "lan", "quiet")] == ["ray", "ssh", "local", "local"]
    assert facts["lan"]["parent"] == "mb" and facts["quiet"]["parent"] == "mb"
    assert "on the middlebox" in logs(items, "mb") and logs(items, "quiet")[-1] == ns_b
    batches = [i for i in items if isinstance(i, Batch) and i.kind == "stream_io"]
    assert {b.node_id for b in batches} == {"ray", "lan"}, "both ends of the flow measured"
    assert not {ns_r, ns_a, ns_b} & netns_list()


def test_nodes_on_a_bare_python_record_1ms_stream_and_echo_flows_and_lose_no_rows(ssh: SSHServer) -> None:
    # An SSH node on a Python 3.9 without any package launches two local nodes
    # on its host (from the shipped zipapp, on that same python): one serves a
    # stream and an echo flow sampled every millisecond, the other drives them.
    ns_s, ns_c = unique_name("bs"), unique_name("bc")
    sender = {"unresponsive": {"wait": ["1ms"], "length": [160], "duration": "1s", "echo": True}}
    upload = {"flow": "up", "duration": "1s", "sample_io_interval": "1ms", "tcp_info_interval": "10ms"}
    run = {
        "child": {
            "node": ssh_node(ssh, "mb"),
            "serial": [
                {
                    "child": {
                        "node": local("srv", ns_s),
                        "serial": [
                            *veth(NET, ns_c, "bs", "bc"),
                            {"stream_server": {"listen_addr": f"{NET}.1:0", "listen_addr_key": "stream"}},
                            {"packet_server": {"listen_addr": f"{NET}.1:0", "listen_addr_key": "packet"}},
                        ],
                    }
                },
                {
                    "child": {
                        "node": local("cli", ns_c),
                        "parallel": [
                            {"stream_client": {"addr_key": "stream", "upload": upload}},
                            {"packet_client": {"addr_key": "packet", "flow": "echo", "sender": [sender]}},
                        ],
                    }
                },
            ],
        }
    }
    out = run_tree(run)
    assert out.ok, out.errors()
    facts = {f["id"]: f for f in out.launch.take_facts()}
    version = python_version(bare_python()) + "."
    assert [facts[n]["launcher"] for n in ("mb", "srv", "cli")] == ["ssh", "local", "local"]
    assert all(facts[n]["python"].startswith(version) for n in ("mb", "srv", "cli")), facts
    assert len({facts[n]["code"] for n in ("mb", "srv", "cli")}) == 1 and SHIPPED.fullmatch(facts["mb"]["code"])

    io = out.table("packet_io")
    sent = io[~io["server"] & io["sent"]]
    assert len(sent) >= 500, "about one packet a millisecond for a second"
    for server, is_sent in ((True, False), (True, True), (False, False)):
        got = io[(io["server"] == server) & (io["sent"] == is_sent)]
        assert sorted(got["seq"]) == sorted(sent["seq"]), "every packet recorded at every step of its echo"

    sio = out.table("stream_io")
    ends = {server: sio[sio["server"] == server] for server in (False, True)}
    flush_ns = FLUSH_SECONDS * 1e9
    for e in ends.values():
        # A sample at most every millisecond (fewer when the node's threads wait for a core); a lost
        # batch would leave a hole of a flush interval (FLUSH_SECONDS) or more in a sampled second.
        assert len(e) >= 50 and e["t_ns"].is_monotonic_increasing
        assert e["t_ns"].iloc[0] < flush_ns and e["t_ns"].diff().max() < flush_ns and e["t_ns"].iloc[-1] > 0.9e9
    assert ends[False]["total_bytes"].iloc[-1] == ends[True]["total_bytes"].iloc[-1] > 0, "the last samples arrived"
    tcp = out.table("tcp_info")
    assert len(tcp) >= 50 and set(tcp["flow"]) == {"up"} and (tcp["rtt_us"] > 0).all()
    assert not {ns_s, ns_c} & netns_list()


def readme_ssh_child() -> dict[str, Any]:
    """Return the README's example of an SSH node: the child run of its launchers block whose node is ssh."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        doc = yaml.safe_load(block)
        runs = doc.get("test", {}).get("run", {}).get("serial", []) if isinstance(doc, dict) else []
        for run in runs:
            if "ssh" in run.get("child", {}).get("node", {}).get("launcher", {}):
                return dict(run["child"])
    raise AssertionError("the README shows no SSH node")


def test_the_readmes_ssh_node_runs_on_the_hosts_own_python3(
    ssh: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a new user would: the README's node, pointed at this sshd, with the
    # default python (the python3 on the host's PATH: Debian's, without numpy
    # or pyarrow on this machine).
    system = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    found = probe(system) if system else None
    if found is None or found[0] < (3, 9) or found[1]:
        pytest.skip(f"this host's python3 ({system}: {found}) is not a package-free Python >= 3.9")
    assert system is not None
    child = readme_ssh_child()
    node = child["node"]
    assert "python" not in node["launcher"]["ssh"], "the README's example takes the host's python3"
    node["launcher"]["ssh"]["destination"] = ssh.destination
    ns = unique_name("rd")
    node["netns"] = {**node["netns"], "name": ns}
    write_experiment(tmp_path / "conf", "readmessh", {"serial": [{"child": child}]})
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--config-dir", str(tmp_path / "conf"), "+experiment=readmessh"]) == 0
    folder = tmp_path / "results" / "latest" / "experiment-readmessh"
    assert (folder / child["system"]["stdout"]).is_file()
    (router,) = [n for n in load(tmp_path / "results" / "latest")["experiment-readmessh"].meta["nodes"]]
    assert router["launcher"] == "ssh" and router["netns"] == ns and SHIPPED.fullmatch(router["code"])
    assert router["python"].startswith(python_version(system) + ".")
    assert ns not in netns_list()


def test_an_ssh_node_that_dies_ends_the_test_naming_it_and_keeps_the_rest(ssh: SSHServer) -> None:
    ns = unique_name("sd")
    run = {
        "parallel": [
            {"child": {"node": local("other"), "serial": [{"system": {"command": "echo kept"}}, {"sleep": "30s"}]}},
            {
                "child": {
                    "node": ssh_node(ssh, "far", ns),
                    "serial": [
                        {"system": {"command": "sleep 64.2718", "background": True}},
                        {"sleep": "300ms"},
                        {"system": {"command": "sh", "args": ["-c", "kill -9 $PPID"]}},
                        {"sleep": "30s"},
                    ],
                }
            },
        ]
    }
    ok, items, _, took = run_tree(run)
    assert not ok and took < 15
    (err,) = [e for e in errors(items) if e.node_id == "far"]
    assert err.message.startswith("node 'far' ended unexpectedly (killed by a signal")
    # The survivor's sleep says why it stopped (issue 16: nothing stops silently).
    assert logs(items, "other") == ["kept", f"canceled: serial on node far failed: {err.message}"]
    # The launcher deleted the namespace the dead node left, and what ran in it.
    assert ns not in netns_list()
    assert subprocess.run(["pgrep", "-f", "sleep 64.2718"], capture_output=True).returncode == 1


def test_a_garbled_ssh_stream_ends_the_test_naming_the_node(ssh: SSHServer) -> None:
    run = {
        "child": {
            "node": ssh_node(ssh, "noisy"),
            "serial": [{"system": {"command": "sh", "args": ["-c", "echo 'Last login:' > /proc/$PPID/fd/1"]}}],
        }
    }
    ok, items, _, took = run_tree(run)
    assert not ok and took < 15
    (err,) = errors(items)
    assert err.node_id == "noisy" and err.message.startswith("node 'noisy': corrupt frame: bad magic b'Last log")


def test_timeout_reaches_an_ssh_node(ssh: SSHServer) -> None:
    ok, items, _, took = run_tree(
        {"child": {"node": ssh_node(ssh, "slow"), "system": {"command": "sleep 65.1234"}}},
        timeout=Duration.parse("1s"),
    )
    assert not ok and took < 15
    assert sorted((e.node_id, e.message) for e in errors(items)) == [
        ("-", "test timed out after 1s"),
        ("slow", "still running when the test timed out after 1s"),
    ]
    assert subprocess.run(["pgrep", "-f", "sleep 65.1234"], capture_output=True).returncode == 1


# --- faults at launch: each fails the test before any run, naming the node and the cause


def launch_fails(node: dict[str, Any], tmp_path: Path) -> tuple[str, float]:
    """Run a tree that marks a file before its SSH node runs; it returns the launch Error and time."""
    marker = tmp_path / "ran"
    ok, items, _, took = run_tree(
        {"serial": [{"system": {"command": f"touch {marker}"}}, {"child": {"node": node, "sleep": "1ms"}}]}
    )
    assert not ok and not marker.exists(), "a run started though a node could not be launched"
    (err,) = errors(items)
    assert err.node_id == "-" and err.tag == "launch"
    return err.message, took


def test_authentication_failure_names_the_node_and_the_user(ssh: SSHServer, tmp_path: Path) -> None:
    keygen(tmp_path / "stranger")
    (ssh.home / ".ssh" / "id_ed25519").unlink()
    message, took = launch_fails(ssh_node(ssh, "auth", key_file=str(tmp_path / "stranger")), tmp_path)
    assert message.startswith(f"launching node 'auth': ssh {ssh.destination}: authentication as 'root'")
    assert took < 15


def test_an_unknown_host_key_is_refused_unless_accept_new_host_key(ssh: SSHServer, tmp_path: Path) -> None:
    ssh.forget_host_key()
    message, _ = launch_fails(ssh_node(ssh, "new"), tmp_path)
    name = f"[127.0.0.1]:{ssh.port}"
    assert f"the host key of {name} (ssh-ed25519 SHA256:" in message
    assert "is not in ~/.ssh/known_hosts" in message and "accept_new_host_key: true" in message
    assert ssh.known_hosts.read_text() == ""

    ok, items, _, _ = run_tree({"child": {"node": ssh_node(ssh, "new", accept_new_host_key=True), "sleep": "1ms"}})
    assert ok, errors(items)
    assert any(t.startswith(f"added the host key of {name} ssh-ed25519 SHA256:") for t in logs(items, "new"))
    assert ssh.known_hosts.read_text().split() == ssh.host_key_line.split()


def test_a_changed_host_key_is_refused_even_with_accept_new_host_key(ssh: SSHServer, tmp_path: Path) -> None:
    other = keygen(tmp_path / "impostor").split()
    ssh.known_hosts.write_text(f"[127.0.0.1]:{ssh.port} {other[0]} {other[1]}\n")
    message, _ = launch_fails(ssh_node(ssh, "mitm", accept_new_host_key=True), tmp_path)
    assert f"the host key of [127.0.0.1]:{ssh.port} has CHANGED" in message and "ssh-keygen -R" in message


def test_a_refused_connection_fails_within_seconds(ssh: SSHServer, tmp_path: Path) -> None:
    port = spare_port()
    node = ssh_node(ssh, "closed")
    node["launcher"]["ssh"]["destination"] = f"root@127.0.0.1:{port}"
    message, took = launch_fails(node, tmp_path)
    assert message == (
        f"launching node 'closed': ssh root@127.0.0.1:{port}: 127.0.0.1 refused the connection "
        f"on port {port} (no SSH server listening there?)"
    )
    assert took < 15


def test_a_host_without_the_python_interpreter_is_named(ssh: SSHServer, tmp_path: Path) -> None:
    message, took = launch_fails(ssh_node(ssh, "nopy", python="/nonexistent/python3"), tmp_path)
    assert message.startswith(
        "launching node 'nopy': node 'nopy' ended unexpectedly "
        "(exit status 127: /nonexistent/python3 was not found on 127.0.0.1 (the node needs Python 3.9+))"
    )
    assert took < 15


def test_a_host_whose_python_is_older_than_3_9_is_named_with_the_version_found_and_needed(
    ssh: SSHServer, tmp_path: Path
) -> None:
    old = old_python()
    found = python_version(old)
    message, took = launch_fails(ssh_node(ssh, "oldpy", python=old), tmp_path)
    assert message == (
        "launching node 'oldpy': node 'oldpy' ended unexpectedly (exit status 3: 127.0.0.1 cannot run the node); "
        f"its stderr: antler node: this host's python is {found} ({old}); the node needs Python 3.9 or newer"
    )
    assert took < 15


def test_an_unreachable_host_fails_within_15s(ssh: SSHServer, tmp_path: Path, netns: NetnsFactory) -> None:
    # The command runs in a namespace of its own whose only route is a veth to
    # a namespace that drops SSH: its connection attempt never leaves them.
    here, there = netns.new("su"), netns.new("sx")
    netns.link(here, f"{NET}.1/24", there, f"{NET}.2/24")
    there.run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP")
    write_experiment(
        tmp_path / "conf",
        "far",
        {"child": {"node": {"id": "far", "launcher": {"ssh": {"destination": f"root@{NET}.2"}}}, "sleep": "1ms"}},
    )
    env = {**os.environ, "HOME": str(ssh.home)}
    done = subprocess.run(
        ["ip", "netns", "exec", here.name, sys.executable, "-m", "antler", "run", "--config-dir",
         str(tmp_path / "conf"), "+experiment=far"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    test = load(tmp_path / "results" / "latest")["experiment-far"]
    # From the test's start (the command's own start-up aside) to its end.
    assert test.meta["duration_s"] < 15
    log = (tmp_path / "results" / "latest" / "experiment-far" / "log.txt").read_text()
    assert f"launching node 'far': ssh root@{NET}.2:22: no answer from {NET}.2:22 within 8s" in log


def test_a_refused_ssh_host_fails_the_command_with_exit_1_and_no_traceback(ssh: SSHServer, tmp_path: Path) -> None:
    port = spare_port()
    write_experiment(
        tmp_path / "conf",
        "refused",
        {
            "child": {
                "node": {"id": "gw", "launcher": {"ssh": {"destination": f"root@127.0.0.1:{port}"}}},
                "sleep": "1ms",
            }
        },
    )
    done = subprocess.run(
        [sys.executable, "-m", "antler", "run", "--config-dir", str(tmp_path / "conf"), "+experiment=refused"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert load(tmp_path / "results" / "latest")["experiment-refused"].meta["duration_s"] < 15
    out = done.stdout + done.stderr
    assert "Traceback" not in out
    assert f"launching node 'gw': ssh root@127.0.0.1:{port}: 127.0.0.1 refused the connection" in out
