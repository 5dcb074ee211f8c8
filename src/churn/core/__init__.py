"""The ML core: pure functions on frames and estimators (no file, DVC or MLflow I/O)."""
