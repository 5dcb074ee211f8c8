"""Reproducible churn-prediction experiments: DVC owns the pipeline and data, MLflow the runs and models."""

__version__ = "0.1.0"
