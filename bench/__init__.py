"""Benchmarks against peers. ``python -m bench [--quick] [NAME ...]`` (``make bench``) runs every
``bench/bench_NAME.py``; each prints its tables and writes them as Markdown to ``bench/results/NAME.md``."""
