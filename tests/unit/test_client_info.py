"""client-info from real user-agent strings of each client family (a maintained parser, ua-parser)."""

import pytest

from devstack.user_agents import CASES
from opentracking.tracking import bots, client_info


@pytest.mark.parametrize(
    ("user_agent", "client_type", "client_os", "client_name", "device_type", "bot"), CASES
)
def test_client_info_matches_the_client(user_agent, client_type, client_os, client_name, device_type, bot):
    verdict = bots.classify(method="GET", user_agent=user_agent, seconds_after_accept=3600)
    info = client_info.describe(user_agent, verdict)
    assert info == {
        "client-type": client_type,
        "client-os": client_os,
        "client-name": client_name,
        "device-type": device_type,
        "user-agent": user_agent,
        "bot": bot,
    }


def test_empty_user_agent_is_unknown_not_an_error():
    info = client_info.describe("", bots.BotVerdict("", "x"))
    assert (info["client-type"], info["client-name"], info["device-type"]) == (
        "unknown",
        "unknown",
        "unknown",
    )
