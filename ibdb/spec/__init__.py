"""Stage 2, what a user writes: the pydantic models of experiments (tasks and their sources,
hypothesis spaces and kernels, budgets), the registries of the kinds that vary, reading spec
files, and the rule that says which fields define a run's hypotheses (its identity).
"""
