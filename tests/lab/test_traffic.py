"""`lab replay` without a server: what it says when nothing answers (the real replay: tests/serving/test_serving.py)."""

from __future__ import annotations

import pytest

from core.errors import LabError
from core.processes import free_port
from lab.traffic.replay import replay


def test_a_replay_with_no_api_says_where_it_looked() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    flight = {
        "carrier": "UA",
        "flight": 1545,
        "origin": "EWR",
        "dest": "IAH",
        "scheduled_departure": "2013-07-01T05:15",
    }

    with pytest.raises(LabError, match=f"the API at {url} did not answer after 0 flights"):
        replay(url, [flight])
