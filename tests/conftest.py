"""Fixtures shared by every test module: the real redis-server started by the tests."""

pytest_plugins = ["redis_server"]
