"""Reports from stored results: analysis, charts, logs, system info, index, encoding."""
