"""A thesis's matrix of runs in one command: python -m launch.sweep SWEEP.yaml (see
__main__.py; the sweep file's format: plan.py)."""
