"""POSTD gateway service."""
