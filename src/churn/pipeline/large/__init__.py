"""The stages' large-data path (params `resources`): each module is one stage's streaming variant, chosen by
that stage when its input is past resources.streaming_rows (train: resources.external_memory_rows, or a Dask
scheduler). Outputs are the default path's files with the same columns; memory is bounded by batch_rows."""
