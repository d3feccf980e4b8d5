"""The leak check fails a test that leaves a namespace, a process or a listener behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.lab import figures

pytest_plugins = ["pytester"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            "import subprocess\n    subprocess.run(['ip', 'netns', 'add', NAME], check=True)",
            "network namespaces left behind",
        ),
        ("import subprocess\n    subprocess.Popen(['sleep', '30'])", "child processes left behind"),
        (
            "import socket\n    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); LEAK.append(s)",
            "listening sockets left behind",
        ),
    ],
    ids=["namespace", "process", "listener"],
)
def test_leak_check_fails_a_leaky_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, body: str, needle: str
) -> None:
    # The inner session keeps ANTLER_TEST_SHARED: without it, every namespace
    # that appeared on the machine while its leaky test waited out the leak
    # check's 5 s (other sessions' tests, running side by side) counted as
    # leaked and was deleted at its end, under the tests that were using them.
    # Its namespace is named in the inner process, so the inner check owns it.
    here = Path(__file__).parent
    pkg = pytester.path / "tests"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copy(here / "conftest.py", pkg / "conftest.py")
    (pkg / "lab").mkdir()
    for name in ("__init__.py", "netns.py", "figures.py"):
        shutil.copy(here / "lab" / name, pkg / "lab" / name)
    (pkg / "test_leaky.py").write_text(
        f"from tests.lab.netns import unique_name\n\nNAME = unique_name('lk')\nLEAK = []\n\ndef test_leaky():\n    {body}\n"
    )
    with monkeypatch.context() as m:
        m.delenv(figures.FIGURES_ENV, raising=False)  # its leaky test is no reliability figure
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "tests")
    result.assert_outcomes(passed=1, errors=1)
    assert needle in result.stdout.str()
    figures.record("leaks", f"leaks planted and caught by the leak check: {needle}", 1, "tests")
