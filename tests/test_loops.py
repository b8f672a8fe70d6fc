"""EVENT_LOOP: which loop a blocking run() serves on."""

import asyncio
import sys

import pytest
import uvloop

from avtomatika.config import Config
from avtomatika.errors import ConfigError
from avtomatika.server import loops


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_auto_runs_on_uvloop_when_installed() -> None:
    assert Config().EVENT_LOOP == "auto"
    assert loops.run(_loop_type(), "auto") is uvloop.Loop


def test_asyncio_keeps_the_standard_loop() -> None:
    assert not issubclass(loops.run(_loop_type(), "asyncio"), uvloop.Loop)


def test_auto_falls_back_and_uvloop_names_the_setting_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loops.loop_factory("auto") is None
    with pytest.raises(ConfigError, match="EVENT_LOOP='uvloop'"):
        loops.loop_factory("uvloop")


def test_the_setting_is_validated() -> None:
    assert Config(EVENT_LOOP="UVLOOP").EVENT_LOOP == "uvloop"
    with pytest.raises(ConfigError, match="EVENT_LOOP"):
        Config(EVENT_LOOP="trio")
