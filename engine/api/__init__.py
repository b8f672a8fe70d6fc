"""The HTTP API: client routes, worker routes and public routes (PROTOCOL.md)."""
