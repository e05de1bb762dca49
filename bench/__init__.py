"""Benchmarks: our service against the reference app, LitServe and the in-process floor.

``make bench`` (``python -m bench.run``) runs them all and writes ``bench/RESULTS.md``.
"""
