"""The property-based differential suite: check == filter == a brute-force oracle.

``schema`` (the tables), ``oracle`` (an independent three-valued evaluator over plain dicts),
``strategies`` (hypothesis: data and rule trees), ``test_differential`` (the comparison on SQLite
and PostgreSQL) and ``test_regressions`` (each disagreement found, as an explicit test).
"""
