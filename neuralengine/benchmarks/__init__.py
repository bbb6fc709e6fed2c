"""Benchmarks: speed (``neuralengine bench``), strength (``neuralengine match``) and puzzles.

* :mod:`~neuralengine.benchmarks.speed` and :mod:`~neuralengine.benchmarks.suite`: the speed benchmark and its
  fixed position suite;
* :mod:`~neuralengine.benchmarks.match`, :mod:`~neuralengine.benchmarks.runner`,
  :mod:`~neuralengine.benchmarks.parsers` and :mod:`~neuralengine.benchmarks.openings`: matches through
  cutechess-cli, fastchess or the built-in runner;
* :mod:`~neuralengine.benchmarks.elo`: Elo, intervals, LOS and SPRT;
* :mod:`~neuralengine.benchmarks.puzzles`: Lichess puzzle accuracy;
* :mod:`~neuralengine.benchmarks.machine`: the machine, versions, model and commit recorded with every result.
"""
