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
        # End-to-end encryption: device lists and one-time key counts in transactions (MSC3202;
        # to-device messages come with receive_ephemeral, MSC2409), and the bot's device made by
        # the appservice without a login (MSC4190). While encryption is off this costs Synapse
        # two key-count queries per transaction (its scheduler; bench/RESULTS.md, load: all it
        # is asked for beyond an echo's costs ~20 % of its delivery time at saturation).
        "org.matrix.msc3202": True,
        "io.element.msc4190": True,
        "namespaces": {
            "users": [{"exclusive": True, "regex": user_regex}],
            "aliases": [],
            "rooms": [],
        },
    }
