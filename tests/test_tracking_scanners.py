"""Machine hits (inputs/tracking/_scanners.py): each documented rule, and its settings."""

from __future__ import annotations

import pytest

from selligent_segment import ConfigurationError
from selligent_segment.inputs.tracking import ScannerRules

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
RULES = ScannerRules()


@pytest.mark.parametrize(
    ("method", "agent", "age", "reason"),
    [
        ("GET", BROWSER, 3600.0, None),
        ("HEAD", BROWSER, 3600.0, "head"),
        ("GET", BROWSER, 9.9, "soon_after_send"),
        ("GET", BROWSER, 10.0, None),
        ("GET", None, 3600.0, "no_user_agent"),
        ("GET", "", 3600.0, "no_user_agent"),
        ("GET", "Mozilla/5.0 (compatible; BingPreview/1.0b)", 3600.0, "scanner_user_agent"),
        ("GET", "Barracuda Sentinel (EE)", 3600.0, "scanner_user_agent"),
        ("GET", "python-requests/2.31", 3600.0, "scanner_user_agent"),
        ("GET", "Mozilla/5.0", 3600.0, None),  # Apple's proxy agent: not a click scanner
    ],
)
def test_scanner_rules(method: str, agent: str | None, age: float, reason: str | None) -> None:
    assert RULES.scanner_reason(method=method, user_agent=agent, age=age) == reason


@pytest.mark.parametrize(
    ("agent", "ip", "reason"),
    [
        (BROWSER, "203.0.113.9", None),
        ("Mozilla/5.0", "203.0.113.9", "apple_proxy_user_agent"),
        (BROWSER, "17.58.1.2", "apple_proxy_ip"),
        (BROWSER, "::ffff:17.58.1.2", "apple_proxy_ip"),  # IPv4 on a dual-stack listener
        (BROWSER, None, None),
        (BROWSER, "not-an-ip", None),
        ("GoogleImageProxy", "66.249.1.1", None),  # Gmail fetches when a person opens
        (None, "203.0.113.9", "no_user_agent"),
    ],
)
def test_machine_open_rules(agent: str | None, ip: str | None, reason: str | None) -> None:
    got = RULES.machine_open_reason(method="GET", user_agent=agent, ip=ip, age=3600.0)
    assert got == reason


def test_rules_are_configurable() -> None:
    rules = ScannerRules(
        window=0, scanner_agents=["ACME-Scan"], mpp_agents=[], mpp_networks=["10.0.0.0/8"]
    )
    assert rules.scanner_reason(method="GET", user_agent="acme-scan/1", age=0.0) == (
        "scanner_user_agent"
    )
    assert rules.scanner_reason(method="GET", user_agent="curl/8", age=0.0) is None
    # window=0 is off: a token dated ahead of the hit (the clock skew allowed) is no
    # reason either
    assert rules.scanner_reason(method="GET", user_agent="curl/8", age=-60.0) is None
    assert rules.machine_open_reason(
        method="GET", user_agent="Mozilla/5.0", ip="10.1.1.1", age=1
    ) == ("apple_proxy_ip")


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"window": -1}, "window"),
        ({"window": "10"}, "window"),
        ({"scanner_agents": "bot"}, "scanner_agents"),
        ({"scanner_agents": [" "]}, "scanner_agents"),
        ({"mpp_agents": [3]}, "mpp_agents"),
        ({"mpp_networks": ["17.0.0.0/33"]}, "mpp_networks"),
    ],
)
def test_invalid_settings_name_the_setting(options: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ScannerRules(**options)  # type: ignore[arg-type]
    assert caught.value.setting == setting
