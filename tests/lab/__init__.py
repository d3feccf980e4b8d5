"""The lab the tests and the benchmarks share: namespaces, run trees, Ray, sshd, hosts, a browser, figures.

Test modules and ``bench/`` import helpers from here (and pytest fixtures from
tests/conftest.py), never from one another; tests/test_lab_imports.py holds
them to it.
"""
