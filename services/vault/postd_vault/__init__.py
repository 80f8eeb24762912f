"""POSTD vault service."""
