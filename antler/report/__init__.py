"""Reports: analysis of stored results and the pages and charts made from it."""
