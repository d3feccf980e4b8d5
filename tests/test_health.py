"""The testbed's health: the sampler's readings, the verdict's rules, calibration's findings, provenance.

The rules are checked on values worked out by hand from issue 26's
thresholds; the sampler on real counters (a namespace whose socket drops
datagrams, this host's /proc/stat); provenance on a real git checkout.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from antler.cli import main
from antler.invoke.provenance import git_state, seeds
from antler.node.launch.netns import enter
from antler.report.calibration import judge_calibration
from antler.report.provenance import short
from antler.report.verdict import bottleneck_drops, judge, link_stats, longest_run_s
from antler.rig.health import Sampler, cpu_use, read_proc_stat, udp_counters, wait_share
from tests.lab.netns import NetnsFactory

# A delay link's closing line from the demo on this machine (antler.rig.delay_link.LinkStats.text).
LINK_LINE = (
    "link d-fwd:10ms:0%: received 44171 lost 0 overflowed 0 released 44171; release lateness mean 39.1us "
    "max 8040us [<10us:3874 <20us:18720 <50us:13250 <100us:7132 <200us:961 <500us:121 <1000us:8 "
    "<2000us:26 <5000us:43 <infus:36]"
)


def test_cpu_use_is_busy_and_steal_shares_of_the_elapsed_jiffies() -> None:
    # user nice system idle iowait irq softirq steal: 100 jiffies pass, 60 idle+iowait, 10 steal.
    before = [100, 0, 50, 1000, 10, 0, 0, 0]
    after = [120, 0, 60, 1050, 20, 0, 0, 10]
    assert cpu_use(before, after) == (40.0, 10.0)
    assert cpu_use(before, before) == (0.0, 0.0)


def test_proc_stat_has_the_host_line_and_one_per_core() -> None:
    stat = read_proc_stat()
    cores = [k for k in stat if k != "cpu"]
    assert "cpu" in stat and cores == [f"cpu{i}" for i in range(len(cores))] and cores
    assert all(len(v) == 8 for v in stat.values())


def test_udp_counters_read_the_udp_lines_of_snmp() -> None:
    text = (
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n"
        "Udp: 10 1 7 12 5 0 0 0 0\n"
        "UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti\n"
        "UdpLite: 0 0 0 0 0 0 0 0\n"
    )
    assert udp_counters(text)["RcvbufErrors"] == 5
    assert udp_counters(text)["InErrors"] == 7


def test_wait_share_is_waiting_over_runnable_time() -> None:
    assert wait_share((100, 0), (400, 100)) == 25.0  # ran 300 ns, waited 100 ns
    assert wait_share((5, 5), (5, 5)) == 0.0


def test_longest_run_counts_consecutive_samples_and_breaks_on_gaps() -> None:
    t = np.arange(20) * 100_000_000  # every 100 ms
    hot = np.array([True] * 12 + [False] + [True] * 7)
    assert longest_run_s(t, hot, 0.1) == pytest.approx(1.2)
    # A gap of more than two periods (the sampler starved) breaks the run.
    t_gap = np.concatenate([t[:6], t[6:] + 1_000_000_000])
    assert longest_run_s(t_gap, np.ones(20, dtype=bool), 0.1) == pytest.approx(1.4)


def _rows(busy: list[float], source: str = "cpu", metric: str = "busy_pct") -> pd.DataFrame:
    return pd.DataFrame(
        {"t_ns": [i * 100_000_000 for i in range(len(busy))], "source": source, "metric": metric, "value": busy}
    )


def test_a_host_busy_for_more_than_a_second_is_suspect_naming_the_figure() -> None:
    cores = pd.concat([_rows([100.0] * 15, "cpu0"), _rows([100.0] * 15, "cpu1")])
    h = judge(pd.concat([_rows([99.0] * 15), cores]), [])
    assert h.status == "suspect"
    assert [r.rule for r in h.reasons] == ["host_cpu"]
    assert "host CPU saturated (>= 95% of 2 cores busy) for 1.5 s" in h.reasons[0].text
    assert h.line().startswith("health suspect: host CPU saturated")


def test_a_host_busy_for_under_a_second_is_ok() -> None:
    busy = [50.0] * 10 + [100.0] * 9 + [50.0] * 10  # 0.9 s saturated
    h = judge(_rows(busy), [])
    assert h.status == "ok", h.reasons
    assert h.figures["host_saturated_s"] == 0.9
    assert h.line().startswith("health ok (host CPU max 100%")


def test_a_cpu_bound_delay_link_is_suspect() -> None:
    h = judge(pd.concat([_rows([40.0] * 30), _rows([97.0] * 30, "delay_link", "cpu_pct")]), [])
    assert [r.rule for r in h.reasons] == ["delay_link_cpu"]
    assert "delay link CPU-bound (>= 90% of a core) for 3.0 s" in h.reasons[0].text


def test_socket_drops_are_suspect_with_their_count_and_namespace() -> None:
    drops = _rows([0, 0, 120, 340], "netns ar-right", "rcvbuf_errors")
    errors = _rows([0, 0, 120, 340], "netns ar-right", "in_errors")
    h = judge(pd.concat([_rows([30.0] * 4), drops, errors]), [])
    assert [r.rule for r in h.reasons] == ["socket_drops"]
    assert h.reasons[0].text.startswith("340 datagrams dropped in receive buffers in ar-right")
    assert h.figures["socket_drops"] == 340


def test_the_delay_link_line_is_parsed_and_its_late_share_counted() -> None:
    (stats,) = link_stats([LINK_LINE])
    assert stats["released"] == 44171 and stats["overflowed"] == 0 and stats["late_max_us"] == 8040
    h = judge(pd.DataFrame(columns=["t_ns", "source", "metric", "value"]), [LINK_LINE])
    # 26 + 43 + 36 = 105 of 44171 releases were 1 ms or more late: 0.238 %, under the 1 % tolerance.
    assert h.figures["delay_link_late_pct"] == round(100 * 105 / 44171, 3)
    assert h.status == "ok"
    late = LINK_LINE.replace("<infus:36]", "<infus:900]")
    h = judge(pd.DataFrame(columns=["t_ns", "source", "metric", "value"]), [late])
    assert [r.rule for r in h.reasons] == ["delay_link_late"]
    assert "delay link released 2.2% of 44171 packets 1000 us or more late (max 8.0 ms)" in h.reasons[0].text


def test_calibration_warns_for_a_rate_above_half_the_unshaped_capacity_naming_it() -> None:
    findings = judge_calibration(2_000_000_000, 20.0, 500e6, 20.3, 80.0, 310e6, 40.0)
    warned = {f.name: f.text for f in findings if f.verdict == "warning"}
    assert set(warned) == {"unshaped_capacity", "shaped_goodput"}
    assert "500 Mbit/s measured" in warned["unshaped_capacity"]
    assert "ask for at most 250 Mbit/s" in warned["unshaped_capacity"]
    assert "shaped goodput 310.0 Mbit/s, 16% of rig.rate 2000 Mbit/s" in warned["shaped_goodput"]


def test_calibration_of_the_demo_values_is_all_ok() -> None:
    # The slack of a 20 ms RTT is 0.5 ms + 2 % = 0.9 ms; 47.5 of 50 Mbit/s is 95 %.
    findings = judge_calibration(50_000_000, 20.0, 650e6, 20.85, 70.0, 47.5e6, 40.0)
    assert [f.verdict for f in findings] == ["ok"] * 5
    late = judge_calibration(50_000_000, 20.0, 650e6, 20.95, 700.0, 42e6, 2.0)
    assert {f.name for f in late if f.verdict == "warning"} == {"base_rtt", "timer_p99", "shaped_goodput", "idle_cpu"}


def test_git_state_says_a_checkout_with_a_changed_file_is_dirty(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "a")
    clean = git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "new.txt").write_text("untracked files do not make it dirty\n")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "a.py").write_text("x = 2\n")
    dirty = git_state(tmp_path)
    assert dirty["dirty"] is True and dirty["changed"] == ["a.py"] and dirty["commit"] == clean["commit"]
    assert git_state(tmp_path / "nowhere")["dirty"] is None


def test_seeds_are_found_by_their_path_in_the_config() -> None:
    config = {"rig": {"seed": 7}, "test": {"run": {"serial": [{"sleep": "1s"}, {"schedule": {"seed": 3}}]}}}
    assert seeds(config) == {"rig.seed": 7, "test.run.serial[1].schedule.seed": 3}


def test_the_sampler_counts_datagrams_a_receiver_never_read(netns: NetnsFactory) -> None:
    ns = netns.new("th")
    ns.ip("addr", "add", "10.77.9.1/24", "dev", "lo")
    sampler = Sampler([ns.name], period_s=0.05).start()
    # The counters count from the sampler's first reading of the namespace: wait for it.
    deadline = time.monotonic() + 10
    while f"netns {ns.name}" not in sampler.rows["source"][-20:] and time.monotonic() < deadline:
        time.sleep(0.01)
    sent: list[int] = []

    def blast() -> None:
        # A receiver that never reads, in the namespace, with a small buffer: most datagrams are dropped.
        enter(ns.name)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            rx.bind(("10.77.9.1", 0))
            for _ in range(300):
                tx.sendto(b"x" * 1000, rx.getsockname())
            sent.append(300)

    t = threading.Thread(target=blast)
    t.start()
    t.join(10)
    # Wait until the sampler has gone round a few more times after the drops (its rows grow each tick).
    after = len(sampler.rows["t_ns"])
    deadline = time.monotonic() + 10
    while len(sampler.rows["t_ns"]) < after + 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    table = sampler.stop()
    assert sent == [300]
    rows = table.to_pandas()
    drops = rows[(rows["source"] == f"netns {ns.name}") & (rows["metric"] == "rcvbuf_errors")]["value"].max()
    assert 250 <= drops <= 300, drops
    h = judge(rows, [])
    assert "socket_drops" in [r.rule for r in h.reasons]
    assert {"cpu", "cpu0"} <= set(rows["source"])


def test_the_bottleneck_drops_are_read_from_the_rigs_closing_tc_output() -> None:
    text = (
        "qdisc htb 1: root refcnt 3 r2q 10 default 0x1 direct_packets_stat 0 direct_qlen 1000\n"
        " Sent 65977244 bytes 44115 pkt (dropped 62, overlimits 0 requeues 0) \n"
        " backlog 0b 0p requeues 0\n"
        "qdisc pfifo 10: parent 1:1 limit 1000p\n"
        " Sent 65977244 bytes 44115 pkt (dropped 62, overlimits 0 requeues 0) \n"
        " backlog 0b 0p requeues 0"
    )
    assert bottleneck_drops(text) == 62
    assert bottleneck_drops("no qdisc here") is None
    # A figure, never a reason: the queue drops what it is there to drop.
    h = judge(_rows([30.0] * 3), [], 0.1, bottleneck_drops(text))
    assert h.status == "ok" and h.figures["bottleneck_drops"] == 62


def test_the_short_provenance_names_version_dirty_kernel_cpu_and_the_offloads_left_on() -> None:
    prov = {
        "antler_ray": {"version": "0.1.0", "commit": "43498a0f70d6402e71839313c870de610aeaea82", "dirty": True},
        "kernel": {"release": "6.18.44"},
        "cpu": {"model": "AMD EPYC", "cpus": 2, "governor": "none (no cpufreq)"},
        "clocksource": "tsc",
        "rig": {
            "sysctls": {"left": {"net.ipv4.tcp_congestion_control": "bbr"}},
            "offloads": {
                "left/l-mid": {"generic-receive-offload": "off", "tcp-segmentation-offload": "off"},
                "mid/d-fwd": {"generic-segmentation-offload": "on", "generic-receive-offload": "on"},
            },
        },
    }
    assert short(prov) == (
        "antler-ray 0.1.0 43498a0f70 (dirty); kernel 6.18.44; 2 x AMD EPYC (none (no cpufreq)); clocksource tsc; "
        "default cca bbr; offloads on: mid/d-fwd gso+gro"
    )


def test_bad_health_and_calibrate_values_are_config_errors_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["vet", "+experiment=hello", "+test.health=maybe"]) == 2
    assert "config error: test.health: 'maybe' must be warn or fail" in capsys.readouterr().err
    assert main(["vet", "+experiment=hello", "calibrate=sometimes"]) == 2
    assert "config error: calibrate: 'sometimes' must be auto, always or off" in capsys.readouterr().err
    assert main(["vet", "+experiment=hello", "+test.health=fail", "calibrate=off"]) == 0
    assert not (tmp_path / "results").exists()


def test_saturation_before_the_flows_measured_is_no_reason() -> None:
    # 2.3 s saturated while the nodes launch and the rig is built, then 30 % while the flows measure (from 3 s).
    busy = [100.0] * 23 + [30.0] * 7 + [30.0] * 100
    assert judge(_rows(busy), []).status == "suspect"
    h = judge(_rows(busy), [], 0.1, None, (3_000_000_000, 12_900_000_000))
    assert h.status == "ok", h.reasons
    assert h.figures["host_busy_pct_max"] == 30.0 and h.figures["measured_s"] == 9.9
