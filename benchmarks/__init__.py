"""matscale benchmarks.

``python -m benchmarks [--quick] [--only NAME[,NAME]] [--json PATH]`` runs every kernel benchmark
in one process and prints one table (throughput, the baseline measured in the same process, the
ratio) under a header with the machine; see :mod:`benchmarks.suite`. Each ``bench_*.py`` script
exposes ``measure(quick=False) -> list[dict]`` and keeps its own command line.
"""
