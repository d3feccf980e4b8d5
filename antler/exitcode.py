"""Exit statuses of the command line."""

OK, FAILED, CONFIG, INTERRUPTED = 0, 1, 2, 130
"""OK: every test passed; FAILED: a test failed; CONFIG: a config or results error; INTERRUPTED: Ctrl-C."""
