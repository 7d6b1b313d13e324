"""Persistence: SQLite schema and queries, API keys, encryption keys; Redis and S3 when scaled out."""
