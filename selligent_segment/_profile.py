"""Opt-in profile updates: which records also set traits on the recipient's profile.

One job: :class:`ProfileUpdates`, the policy (trait names, validated when made), and its
:meth:`~ProfileUpdates.update_for`, which tells the Emitter whether a record also gets an
``identify``. The identify itself is built by ``_mapping.py`` from the record's fields and
the update this module returns, which travels with the record through the intake and the
spool (under :data:`PROFILE_UPDATE`), so a process that replays a journal sends the same
identify whatever its own settings.

Guarantees: only an unsubscribe, a *hard* bounce and a spam complaint mark a profile (a
soft bounce, or a bounce of unknown type, never does); an update is a plain JSON value.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from selligent_segment._errors import ConfigurationError, shown
from selligent_segment._record import PROFILE_UPDATE, EventKind

__all__ = ["PROFILE_UPDATE", "ProfileUpdates", "profile_updates"]

_TRAIT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")
_SUFFIX = re.compile(r"[A-Za-z0-9_]{1,20}")


def _trait(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _TRAIT_NAME.fullmatch(value):
        raise ConfigurationError(
            f"profile_updates.{attribute.name}",
            f"expected None or a trait name of letters, digits and _ (starting with a "
            f"letter, at most 100 characters), got {shown(value)}",
        )


def _suffix(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not _SUFFIX.fullmatch(value)):
        raise ConfigurationError(
            "profile_updates.time_suffix",
            f"expected None or 1 to 20 letters, digits and _, got {shown(value)}",
        )


@attrs.frozen(kw_only=True)
class ProfileUpdates:
    """Which traits the ``identify`` sent after an unsubscribe, a hard bounce or a spam
    complaint sets (``None`` turns that kind's update off). Validated when made.

    Traits sent: ``{unsubscribed: true}``; ``{bounced: true, bounce_type: "hard"}``;
    ``{marked_as_spam: true}``; each with ``<name><time_suffix>`` = the event's time
    (ISO-8601 UTC, milliseconds) unless ``time_suffix`` is None, and ``email`` when the
    record has one.
    """

    unsubscribed: str | None = attrs.field(default="email_unsubscribed", validator=_trait)
    """Trait set to ``true`` on an unsubscribe."""
    bounced: str | None = attrs.field(default="email_bounced", validator=_trait)
    """Trait set to ``true`` on a hard bounce."""
    bounce_type: str | None = attrs.field(default="email_bounce_type", validator=_trait)
    """Trait set to ``"hard"`` beside ``bounced`` (None: not sent)."""
    marked_as_spam: str | None = attrs.field(default="email_marked_as_spam", validator=_trait)
    """Trait set to ``true`` on a spam complaint."""
    time_suffix: str | None = attrs.field(default="_at", validator=_suffix)
    """Appended to each trait name above for the trait holding the event's time."""
    _updates: dict[str, dict[str, Any]] = attrs.field(
        init=False, repr=False, eq=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        suffix = self.time_suffix
        names = [self.unsubscribed, self.bounced, self.bounce_type, self.marked_as_spam]
        if suffix:
            names += [f"{n}{suffix}" for n in (self.unsubscribed, self.bounced) if n]
            names += [f"{self.marked_as_spam}{suffix}"] if self.marked_as_spam else []
        used = [n for n in names if n is not None]
        if "email" in used or len(set(used)) != len(used):
            raise ConfigurationError(
                "profile_updates", "trait names must differ from each other and from 'email'"
            )
        updates = self._updates
        for kind, name in (
            (EventKind.UNSUBSCRIBED, self.unsubscribed),
            (EventKind.BOUNCED, self.bounced),
            (EventKind.MARKED_AS_SPAM, self.marked_as_spam),
        ):
            if name is None:
                continue
            traits: dict[str, Any] = {name: True}
            if kind is EventKind.BOUNCED and self.bounce_type is not None:
                traits[self.bounce_type] = "hard"
            updates[kind.value] = {"traits": traits, "at": f"{name}{suffix}" if suffix else None}

    def update_for(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        """The profile update of a record's normalised fields, or None when the record
        marks no profile: ``{"traits": {...}, "at": <time trait name or None>}``. The value
        is shared: never change it."""
        # Keyed by the kind's text: hashing an Enum member runs Python code (610 ns a call
        # for a delivered record, against 230 ns like this, on the benchmark host).
        kind: str = fields["type"]._value_
        update = self._updates.get(kind)
        if update is not None and kind == "bounced" and fields.get("bounce_type") != "hard":
            return None
        return update


def profile_updates(value: object) -> ProfileUpdates | None:
    """``EmitterConfig.profile_updates`` from what a caller passes: True (the default
    trait names), False or None (off), or a :class:`ProfileUpdates`."""
    if value is None or value is False:
        return None
    if value is True:
        return ProfileUpdates()
    if isinstance(value, ProfileUpdates):
        return value
    got = shown(type(value).__name__, quote=False)
    raise ConfigurationError(
        "profile_updates", f"expected True, False, None or a ProfileUpdates, got {got}"
    )
