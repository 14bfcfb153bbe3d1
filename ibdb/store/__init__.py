"""Stage 5, the DuckDB store: its file, schema and catalog, ingest of shard files, views,
SQL functions, frames for notebooks, export and health checks. Never imports torch.
"""
