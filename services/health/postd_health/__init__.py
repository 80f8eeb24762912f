"""POSTD health service."""
