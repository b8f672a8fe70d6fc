"""The process side: what one engine process holds beside jobs.

- :mod:`.loops` picks the event loop; :mod:`.takeover` keeps one engine per port in a process.
- :mod:`.channels` holds the worker WebSockets this process serves, to push ``cancel_task``.
- :mod:`.crashpoints` is the test-only kill switch after a named write.
"""
