"""A header message's whole state, comparable: for the tests that prove a quick way of
reading an HTTP answer equal to ``http.client``'s own."""

from __future__ import annotations

from typing import Any


def message_state(message: Any) -> dict[str, Any]:
    """Everything an ``email.message.Message`` holds, its defects (exceptions) as their
    class and text and the messages of its payload as their own states."""
    state = dict(vars(message))
    state["defects"] = [(type(d), str(d)) for d in message.defects]
    if isinstance(message.get_payload(), list):
        state["_payload"] = [message_state(part) for part in message.get_payload()]
    return state
