"""The write side: everything that changes a job, each change one atomic commit with its follow-ups.

- :mod:`.runner` steps jobs (runs a state's handler, commits the one action it took), with
  :mod:`.context` (what a handler receives), :mod:`.actions` (what it asks for) and
  :mod:`.outcomes` (the commit each action becomes).
- :mod:`.results` takes workers' answers, timeouts and lost workers; :mod:`.dispatch` picks workers.
- :mod:`.operations` is what clients and operators do to jobs; :mod:`.bulk` does it to many,
  :mod:`.rerun` starts a job again from any state, :mod:`.breakpoints` holds jobs before a state.
- :mod:`.scheduler` carries out timers: retries, timeouts and the follow-ups a commit left.
- :mod:`.commits` applies every change; :mod:`.shared` is what these parts share (a
  :class:`~.shared.Runtime`, not the engine).
- :mod:`.watchers` wakes clients waiting for a job.
"""
