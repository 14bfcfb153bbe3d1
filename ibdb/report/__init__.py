"""Stage 7, `ibdb report`: its own data model, collected from the store, drawn as figures
and written as Markdown.
"""
