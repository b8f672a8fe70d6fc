"""Engines served by the end-to-end tests as processes: ``python -m avtomatika serve <module path>:engine``."""
