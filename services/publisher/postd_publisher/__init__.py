"""POSTD publisher service."""
