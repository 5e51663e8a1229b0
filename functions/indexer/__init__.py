"""The indexer Lambda: S3 object-created notifications from SQS -> ingest."""
