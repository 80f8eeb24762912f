"""POSTD webhook-router service."""
