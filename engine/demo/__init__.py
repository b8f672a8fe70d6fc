"""The demo: three blueprints, in-process workers speaking the HTTP worker protocol, and a trickle of jobs."""
