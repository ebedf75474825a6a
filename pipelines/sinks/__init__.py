"""What a job writes for its users: WebDataset shard families, the Parquet + DuckDB catalog, HF features."""
