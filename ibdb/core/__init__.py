"""Stage 0, what every stage shares: errors, the loss columns, the estimate row, the method
registry, memory limits. Imports nothing else of ibdb.
"""
