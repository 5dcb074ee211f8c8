"""MLflow: the store, a pipeline execution's stage runs, and the model registry."""
