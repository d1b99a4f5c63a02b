"""Pieces of the drl vs Stable-Baselines3 benchmark (``python -m benchmarks.run``).

* :mod:`benchmarks.harness.suites`: what each suite runs (rows, variants, step budgets);
* :mod:`benchmarks.harness.sides`: one training run on each side (drl, SB3), timed the same way;
* :mod:`benchmarks.harness.analysis`: the comparisons, computed from the recorded runs;
* :mod:`benchmarks.harness.report`: ``report.md`` and the PNG plots (and the report pieces the single-study
  scripts share: header, machine line, Configs/Notes, figures);
* :mod:`benchmarks.harness.machine`: the machine and library versions;
* :mod:`benchmarks.harness.script`: the frame of the single-study scripts (``pendulum_solve``, ``masked_velocity``,
  ``aacd``, ``active_search``): shared arguments, ``results.json``'s meta, one run through ``drl.api``, the
  closing writes.
"""
