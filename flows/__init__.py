"""Prefect flows and deployments over `pipeline/`, plus the `namelang` command line.

Nothing here re-implements a stage: the flows only wire `pipeline` functions as tasks.
"""
