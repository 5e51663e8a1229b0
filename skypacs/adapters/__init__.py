"""Adapters behind the ports: one module per backend (filesystem, SQLite, S3, DynamoDB, ...)."""
