"""The only package that writes SQL: DuckDB schema, logs, adapter registry."""
