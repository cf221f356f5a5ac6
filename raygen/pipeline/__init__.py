"""Workflow glue: the DVC hand-over, the one-run-per-checkout lock, code deps and the params checker.

Standard library only at import time: the Snakefile imports these before any environment is activated.
"""
