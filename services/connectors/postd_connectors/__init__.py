"""POSTD connectors service."""
