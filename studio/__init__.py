"""The web studio: blueprint graphs, jobs, quarantine and workers, served at ``/studio``.

``setup_studio(app, engine)`` mounts it on the engine's aiohttp application; the engine does this
itself when ``STUDIO_ENABLED`` is true. Importing ``avtomatika`` never imports this package.
"""

from __future__ import annotations

from avtomatika.studio.app import STUDIO_PREFIX, create_studio, setup_studio

__all__ = ["STUDIO_PREFIX", "create_studio", "setup_studio"]
