"""Stage 6, estimates of stored runs: which (run, loss, method, eps) rows a call computes,
read from the store and stored back.
"""
