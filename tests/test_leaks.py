"""The leak check fails a test that leaves a namespace, a process or a listener behind."""

from __future__ import annotations

import pytest

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
)
def test_leak_check_fails_a_leaky_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, body: str, needle: str
) -> None:
    monkeypatch.delenv("ANTLER_TEST_SHARED", raising=False)
    import shutil
    from pathlib import Path

    here = Path(__file__).parent
    pkg = pytester.path / "tests"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copy(here / "conftest.py", pkg / "conftest.py")
    shutil.copy(here / "nettools.py", pkg / "nettools.py")
    from tests.nettools import unique_name

    (pkg / "test_leaky.py").write_text(f"NAME = {unique_name('lk')!r}\nLEAK = []\n\ndef test_leaky():\n    {body}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "tests")
    result.assert_outcomes(passed=1, errors=1)
    assert needle in result.stdout.str()
