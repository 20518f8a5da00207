"""Launching runs: Slurm (slurm.sbatch), a local Slurm for tests (local_slurm_cluster.sh),
and sweeps of many runs (python -m launch.sweep)."""
