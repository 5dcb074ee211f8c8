"""Command-line tools around the pipeline: sweep, compare, tune, predict, reproduce, registry, store, data."""
