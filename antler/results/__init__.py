"""Result folders: writing a test's data as it arrives, and loading it for analysis."""

from antler.results.load import Results, TestResult, load

__all__ = ["Results", "TestResult", "load"]
