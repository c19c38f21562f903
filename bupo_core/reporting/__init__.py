"""Reporting: reading sweeps back (``sweep_results``), every figure (entropy, training, evaluation,
sweep plots) and the results page (``report``). They read what the algorithm wrote and compute no
training; nothing in the algorithm modules imports from here.
"""
