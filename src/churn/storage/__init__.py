"""Files the stages and the tools share, below both: where outputs live (paths), staged all-or-nothing outputs
(outputs), the one CSV reader (csv_reader), parquet read and written in batches (parquet), and the Dask cluster
that reads the same parquet files (dask). No stage logic: nothing here decides what a stage computes."""
