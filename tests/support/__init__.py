"""Everything the tests use that is not a test. Outside this package ``tests/`` holds only ``test_*.py``
modules and ``conftest.py`` files (``test_layout.py`` keeps it so); nothing in here is collected.

In-process helpers (imported as ``support.<module>``):

- ``engine``: a started in-memory engine, waits on a job's status, fake workers, the fast settings.
- ``api``: the HTTP API driver ``Api`` and the ``make_api`` fixture (a conftest plugin), small API blueprints.
- ``studio``: the studio's echo blueprints, app, engine, CSRF token, sign-in, SSE reader.
- ``notebook``: blueprints and readers of the notebook widget tests; ``notebook_fixtures``: ``make_debugger``.
- ``blueprints``: blueprint factories shared by test modules (a chain, a dispatch, a fan-out, ...).
- ``storage_contract``, ``history_contract``: one contract per backend kind, as base classes the
  ``test_storage_*`` and ``test_history_*`` modules subclass (their ``Test*`` subclasses are collected there).
- ``doc_samples``: the fenced code blocks of a Markdown file.

Real processes and servers:

- ``processes``: free ports, child processes with logs, readiness waits, the paths of ``apps/`` and ``workers/``.
- ``redis_server``, ``postgres_server``: a real redis-server and PostgreSQL (their fixtures are conftest plugins).
- ``e2e``: the end-to-end engine process and its workers (fixtures: a conftest plugin); ``cluster``:
  several engine processes on one Redis; ``crash_harness`` and ``crash_points``: the crash-point harness.
- ``browser``: Chromium through Playwright, an engine served from a thread, an echo worker process.
- ``netns``: a peer that is not loopback, from a network namespace.
- ``apps/``: engines served as ``python -m avtomatika serve tests/support/apps/<name>.py:engine``.
- ``workers/``: worker scripts run as processes: ``echo`` (ours, protocol-exact) and ``sdk`` (the real
  worker SDK in a venv of its own; the same module makes that venv and the worker's command line).
"""
