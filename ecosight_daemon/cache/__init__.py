"""The embedding cache: the SQLite store, its schema and migrations, read-only reports."""
