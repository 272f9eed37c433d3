"""The appservice registration file the homeserver loads (app_service_config_files)."""

from __future__ import annotations

from typing import Any


def registration(
    *,
    appservice_id: str,
    url: str,
    as_token: str,
    hs_token: str,
    sender_localpart: str,
    user_regex: str,
) -> dict[str, Any]:
    return {
        "id": appservice_id,
        "url": url,
        "as_token": as_token,
        "hs_token": hs_token,
        "sender_localpart": sender_localpart,
        # The bot answers people; Synapse must not throttle it like a person.
        "rate_limited": False,
        # Presence, typing and receipts (MSC2409). Only this key: with the old unstable one as
        # well, Synapse sends each ephemeral event twice.
        "receive_ephemeral": True,
        "namespaces": {
            "users": [{"exclusive": True, "regex": user_regex}],
            "aliases": [],
            "rooms": [],
        },
    }
