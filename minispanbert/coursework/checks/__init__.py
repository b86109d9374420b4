"""Graded tests for the coursework assignments, one module per assignment (a1, a2, a3).

Each module registers its tests with :func:`harness.graded`. The same test code runs twice:
against the solution at build time (``record=True``: every value it compares is stored as the
reference, every gradient and statistical check must already pass) and against a submission at
grading time, in a sandboxed child that only collects the values (sandbox.py), which the grading
process then judges against the stored ``.npz`` references (runner.py, ``harness.judge``). So the
autograder carries reference outputs, never the solution code.

This package uses only relative imports among its own modules, NumPy, and the submission's
``minispanbert`` (whose unlisted modules, such as ``minispanbert.gradcheck``, come from the
pristine student copy, never from the submission): ``build`` copies it into the autograder as the
top-level package ``coursework_checks``.
"""
