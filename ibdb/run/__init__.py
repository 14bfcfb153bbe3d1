"""Stage 4, sampling: plans (which runs, which hypotheses are missing), execution on a device,
executors (local, Ray, Slurm), shard files, and the splitting sampler. The runners themselves
are ``ibdb.runners`` (the repository's ``runners/``), which belong to this stage.
"""
