"""Job and task ids as the keys of a storage in this process's memory: uuids as integers.

An id is a uuid's text (:func:`~avtomatika.models.new_id`, or one a caller chose): 36 characters, a
96-byte ``str`` object. Held by the ten thousand as dict keys and queue entries, the 128-bit integer
it spells takes 48 bytes. Only the canonical text (lower-case hex digits, dashes in their places)
becomes an integer, so the integer always gives back the very text it came from; any other id stays
its own key (an ``int`` never equals a ``str``, so the two kinds of key cannot collide).
"""

from __future__ import annotations

import re

#: An id as kept: the integer of a canonical uuid text, or the text itself.
Key = int | str

_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch


def key_of(id_: str) -> Key:
    """The key ``id_`` is kept under."""
    if _CANONICAL(id_) is None:
        return id_
    return int(id_.replace("-", ""), 16)


def id_of(key: Key) -> str:
    """The id kept under ``key`` (the inverse of :func:`key_of`)."""
    if isinstance(key, str):
        return key
    text = f"{key:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
