"""NAB benchmark: weir's sensor detector and NAB's baselines under NAB's own scoring rules.

``python -m bench.nab --bundle DIR`` prints the table; ``bench.nab.scorer`` holds the
rules, ``bench.nab.corpus`` reads a NAB directory, ``bench.nab.detectors`` the detectors.
"""
