"""Stage 3, a spec's task as arrays: the task sources' readers and generators, splitting,
preprocessing and the finishing checks. Never imports torch or the store.
"""
