"""Data files shipped inside the ibdb wheel (see pyproject.toml)."""
