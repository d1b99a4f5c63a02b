"""Pieces of the drl vs Stable-Baselines3 benchmark (``python -m benchmarks.run``).

* :mod:`benchmarks.harness.suites`: what each suite runs (rows, variants, step budgets);
* :mod:`benchmarks.harness.sides`: one training run on each side (drl, SB3), timed the same way;
* :mod:`benchmarks.harness.analysis`: the comparisons, computed from the recorded runs;
* :mod:`benchmarks.harness.report`: ``report.md`` and the PNG plots;
* :mod:`benchmarks.harness.machine`: the machine and library versions.
"""
