"""API types stay in step with the domain vocabulary."""

from typing import get_args

from app.domain.model import Channel
from app.ledger.schemas import ChannelOrAll


def test_channel_or_all_lists_every_channel():
    assert set(get_args(ChannelOrAll)) == {c.value for c in Channel} | {"all"}
