"""Stage 1, pure numerics (numpy and scipy only): the ncx2 fit and its bootstrap, the
generalised chi-squared law, tilting, the 2023 bound, the paper's procedure, the estimators
that turn losses, spectra or levels into estimate rows. Nothing from spec, store or torch.
"""
