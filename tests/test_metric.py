"""Durations, byte counts and bitrates need units, as a user writes them."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from antler.node.metric import Bitrate, Bytes, Duration, Probability, UnitError


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
    [
        ("64K", 64_000),
        ("2MB", 2_000_000),
        ("1Mi", 1_048_576),
        ("1MiB", 1_048_576),
        ("1500", 1500),
        (1500, 1500),
        ("8kbit", 1000),
        ("2Mb", 250_000),  # lowercase b is a bit, everywhere
        ("1.1K", 1100),  # exact: no float rounding
    ],
)
def test_bytes_parse(text: object, n: int) -> None:
    assert Bytes.parse(text).n == n


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("50Mbit", 50_000_000),
        ("50mbit", 50_000_000),
        ("1Gbit", 10**9),
        ("500kbit", 500_000),
        ("1MBps", 8_000_000),
        ("50MB/s", 400_000_000),  # issue 16: was taken as 50 Mbit/s
        ("50MBps", 400_000_000),
        ("50Mbps", 50_000_000),
        ("10mbps", 10_000_000),  # bits, as iperf3 reads it
        ("50Mb/s", 50_000_000),
        ("50Mbit/s", 50_000_000),
        ("1Mibit", 1_048_576),
        ("1.5Gbps", 1_500_000_000),
        ("0", 0),
    ],
)
def test_bitrate_parse(text: str, bps: int) -> None:
    assert Bitrate.parse(text).bps == bps


def test_bitrate_without_unit_is_refused() -> None:
    with pytest.raises(UnitError):
        Bitrate.parse(50)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("50MB", "amount of data, not a rate"),  # issue 16: was taken as 50 Mbit/s
        ("50MBPS", "reads two ways"),  # issue 16: was taken as 50 Mbit/s
        ("50Mbyte", "amount of data"),
        ("50M", "no unit"),
        ("50", "no unit"),
        ("50Mbit/h", "reads two ways"),
        ("0.5bit", "whole number"),
    ],
)
def test_bitrate_that_reads_two_ways_is_refused_with_the_spellings_that_work(text: str, why: str) -> None:
    with pytest.raises(UnitError, match=why) as e:
        Bitrate.parse(text)
    assert "50MB/s" in str(e.value) and "50Mbit" in str(e.value)


@pytest.mark.parametrize(("text", "why"), [("2MB/s", "is a rate"), ("2Mbps", "is a rate"), ("2MBps", "is a rate"),
                                           ("7bit", "whole number of bytes"), ("1.5", "whole number"),
                                           ("2parsecs", "unknown unit"), ("-1K", "invalid")])  # fmt: skip
def test_an_amount_refuses_rate_spellings_and_parts_of_a_byte(text: str, why: str) -> None:
    with pytest.raises(UnitError, match=why):
        Bytes.parse(text)


@pytest.mark.parametrize(("text", "p"), [("0", 0.0), (0, 0.0), ("0.5", 0.5), (0.01, 0.01), ("1%", 0.01),
                                         ("100%", 1.0), ("0.5%", 0.005)])  # fmt: skip
def test_probability_is_below_one_or_a_percentage(text: object, p: float) -> None:
    assert Probability.parse(text).p == pytest.approx(p)


@pytest.mark.parametrize(
    ("text", "hint"),
    [("1", "100% for certain, or 1% for one in a hundred"), (1, "100%"), ("5", "5%"), ("150%", "between"),
     ("-0.1", "between"), ("x", "not a number")],
)  # fmt: skip
def test_probability_that_reads_two_ways_is_refused_with_a_hint(text: object, hint: str) -> None:
    with pytest.raises(UnitError, match=hint.replace("%", "%")):
        Probability.parse(text)


@given(st.integers(min_value=0, max_value=10**13))
def test_bitrate_text_round_trips(bps: int) -> None:
    assert Bitrate.parse(str(Bitrate(bps))) == Bitrate(bps)
