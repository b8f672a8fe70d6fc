"""Config: a typo fails at once, naming the setting meant; the environment's other variables are ignored."""

from __future__ import annotations

import pytest

from avtomatika import Config
from avtomatika.errors import ConfigError


def test_an_unknown_keyword_names_the_nearest_setting() -> None:
    with pytest.raises(ConfigError, match=r"'API_PROT' \(did you mean API_PORT\?\)"):
        Config(API_PROT=1)
    with pytest.raises(ConfigError, match=r"'job_max_retries' \(did you mean JOB_MAX_RETRIES\?\)"):
        Config(job_max_retries=3)


def test_an_unknown_keyword_far_from_any_setting_is_named_alone() -> None:
    with pytest.raises(ConfigError) as raised:
        Config(COMPLETELY_UNRELATED=1, API_PORT=9000)
    assert str(raised.value) == "Config has no setting 'COMPLETELY_UNRELATED'"


def test_other_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PROT", "1")  # a typo in the environment cannot be told from another program's
    monkeypatch.setenv("JOB_MAX_RETRIES", "7")
    assert Config().JOB_MAX_RETRIES == 7


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="API_PORT"):
        Config(API_PORT=70_000)
