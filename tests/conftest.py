"""Fixtures shared by every test module: the real redis-server started by the tests, the notebook debuggers."""

pytest_plugins = ["redis_server", "notebook_fixtures"]
