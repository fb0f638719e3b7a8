"""Mailgun's `client-info` for an open, from a maintained user-agent parser (ua-parser with its pinned
rules package) and our bot classification.

    client-type  "email client", "browser", "mobile browser", "library", "robot" or "unknown"
    client-os    the operating system family ("Windows", "iOS", "Mac OS X", "Android", ...) or "unknown"
    client-name  the client family ("Outlook", "Thunderbird", "Apple Mail", "Chrome", ...) or "unknown"
    device-type  "desktop", "mobile", "tablet" or "unknown"
    user-agent   as sent
    bot          "apple", "gmail", "generic" or ""
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from opentracking.tracking.bots import BotVerdict

_EMAIL_CLIENTS = {
    "outlook",
    "thunderbird",
    "apple mail",
    "airmail",
    "postbox",
    "windows live mail",
    "windows mail",
    "lotus notes",
    "ibm notes",
    "spark",
    "canary mail",
    "eudora",
    "the bat!",
    "mailbird",
    "em client",
    "gmailimageproxy",
    "yahoomailproxy",
    "yandex",
    "superhuman",
}
_MOBILE_OS = {"ios", "android", "windows phone", "blackberry os", "kaios"}
_DESKTOP_OS = {"windows", "mac os x", "macos", "linux", "ubuntu", "chrome os", "fedora", "debian", "freebsd"}
_LIBRARIES = {
    "python requests",
    "python-urllib",
    "curl",
    "wget",
    "go-http-client",
    "okhttp",
    "java",
    "apache-httpclient",
}
# Names ua-parser gives that mail users know by another name.
_RENAMED = {"Mobile Safari UI/WKWebView": "Apple Mail", "GmailImageProxy": "Gmail image proxy"}


@lru_cache(maxsize=4096)
def _parsed(user_agent: str) -> tuple[str, str, str]:
    # Imported on first use: ua-parser and its rules (with yaml) cost ~24 ms of import, which the API and
    # submit functions, importing this module only through the events consumer's names, never use.
    from ua_parser import parse

    result = parse(user_agent)
    family = result.user_agent.family if result.user_agent else "Other"
    os_family = result.os.family if result.os else "Other"
    device = result.device.family if result.device else "Other"
    return family, os_family, device


def describe(user_agent: str, verdict: BotVerdict) -> dict[str, Any]:
    user_agent = user_agent or ""
    family, os_family, device = _parsed(user_agent) if user_agent else ("Other", "Other", "Other")
    name = _RENAMED.get(family, family)
    lowered = name.lower()
    os_lower = os_family.lower()
    if device.lower() in ("ipad",) or "tablet" in device.lower():
        device_type = "tablet"
    elif os_lower in _MOBILE_OS or device.lower() in ("iphone", "generic smartphone"):
        device_type = "mobile"
    elif os_lower in _DESKTOP_OS:
        device_type = "desktop"
    else:
        device_type = "unknown"
    if verdict.bot == "generic" and lowered in _LIBRARIES:
        client_type = "library"
    elif verdict.bot == "generic" and family == "Other":
        client_type = "robot"
    elif lowered in _EMAIL_CLIENTS or family.lower() in _EMAIL_CLIENTS:
        client_type = "email client"
    elif family == "Other":
        client_type = "unknown"
    elif device_type in ("mobile", "tablet"):
        client_type = "mobile browser"
    else:
        client_type = "browser"
    return {
        "client-type": client_type,
        "client-os": "unknown" if os_family == "Other" else os_family,
        "client-name": "unknown" if family == "Other" else name,
        "device-type": device_type,
        "user-agent": user_agent,
        "bot": verdict.bot,
    }
