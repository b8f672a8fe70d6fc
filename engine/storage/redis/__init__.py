"""Live state in Redis, shared by several engine processes.

Every change is one Lua script (:mod:`.scripts`), so it lands whole or not at all, whichever
process makes it. Records are orjson documents, the same dicts as ``to_dict()``; key names are in
:mod:`avtomatika.storage.redis.keys`.

What each process adds on top of the scripts:

- one reader of the runnable stream for all its ``take_runnable`` callers (a consumer group, so each
  entry goes to one process; entries are acknowledged by ``ack_runnable``, renewed while held, and
  taken over by another process when a holder stops renewing for ``lease_s``);
- one pub/sub subscription that wakes its long-polling ``take_task`` callers when any process queues
  a task of a type they wait for, with a periodic re-check in case a notification is lost.

Calls that claim something (a task, due timers, expired workers) stay right when redis-py retries them
after a lost reply: a retried commit or claim is recognised and answered as the first one was.

Modules: :mod:`.storage` (the storage: jobs, tasks, workers, timers), :mod:`.runnable` (the stream
reader, leases and their renewal), :mod:`.wakeups` (pub/sub wake-ups of long polls), :mod:`.transport`
(events and worker commands), :mod:`.scripts` (the Lua), :mod:`.encoding` (records and arguments as
stored) and :mod:`.background` (stopping background loops, backing off).
"""

from __future__ import annotations

from .storage import RedisStorage, RedisUnavailable
from .transport import RedisEvents

__all__ = ["RedisEvents", "RedisStorage", "RedisUnavailable"]
