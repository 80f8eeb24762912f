"""Root conftest: the shared test plugin (real PostgreSQL and broker per session)."""

pytest_plugins = ["postd_common.testing"]
