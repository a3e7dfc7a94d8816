"""The console names every ledger trigger in both its languages (a new trigger must not show as a raw word)."""

from __future__ import annotations

import pytest

from app.console.render import TRIGGER_NAMES
from app.domain.model import Trigger


@pytest.mark.parametrize("lang", ["en", "de"])
def test_every_trigger_has_a_name(lang):
    assert sorted(set(Trigger) - set(TRIGGER_NAMES[lang])) == []
