"""Durations, byte counts and bitrates need units, as a user writes them."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from antler.node.metric import Bitrate, Bytes, Duration, UnitError


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("100ms", 100_000_000),
        ("1.5s", 1_500_000_000),
        ("20us", 20_000),
        ("20µs", 20_000),
        ("7ns", 7),
        ("1m30s", 90_000_000_000),
        ("2h", 7_200_000_000_000),
        ("0", 0),
        (".5s", 500_000_000),
    ],
)
def test_duration_parses_units(text: str, ns: int) -> None:
    assert Duration.parse(text).ns == ns


@pytest.mark.parametrize("bad", ["10", 10, 1.5, "10 parsecs", "ms", "", "1.5", True])
def test_duration_without_a_unit_is_refused(bad: object) -> None:
    with pytest.raises(UnitError):
        Duration.parse(bad)


@given(st.integers(min_value=0, max_value=10**15))
def test_duration_text_round_trips(ns: int) -> None:
    d = Duration(ns)
    assert Duration.parse(str(d)) == d


@pytest.mark.parametrize(
    ("text", "n"),
    [("64K", 64_000), ("2MB", 2_000_000), ("1Mi", 1_048_576), ("1500", 1500), (1500, 1500), ("8kbit", 1000)],
)
def test_bytes_parse(text: object, n: int) -> None:
    assert Bytes.parse(text).n == n


@pytest.mark.parametrize(
    ("text", "bps"),
    [("50Mbit", 50_000_000), ("50mbit", 50_000_000), ("1Gbit", 10**9), ("500kbit", 500_000), ("1MBps", 8_000_000)],
)
def test_bitrate_parse(text: str, bps: int) -> None:
    assert Bitrate.parse(text).bps == bps


def test_bitrate_without_unit_is_refused() -> None:
    with pytest.raises(UnitError):
        Bitrate.parse(50)
