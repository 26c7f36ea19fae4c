"""While a command waits for delivery: say on stderr why events are not arriving, once
per tenant and error, again at most every :data:`REPEAT_EVERY` seconds while it lasts,
instead of minutes of silence and a bare "not delivered" at the end."""

from __future__ import annotations

from selligent_segment._errors import shown
from selligent_segment._throttle import Throttle
from selligent_segment.cli._base import PROG
from selligent_segment.cli._summary import error_note
from selligent_segment.delivery._stats import Stats

__all__ = ["REPEAT_EVERY", "FailureWatch"]

#: Seconds before the same tenant's same error is said again.
REPEAT_EVERY = 30.0


class FailureWatch:
    """Turns successive :class:`Stats` snapshots into warning lines: a tenant's new last
    error (or a pause) is said at once; an error of the same kind (the same HTTP status;
    without one, the same text up to its first ``:``) again only after
    :data:`REPEAT_EVERY` seconds, in its newest text; an error older than the last one
    said is not repeated.

    Guarantee: pure (no printing, no clock of its own): :meth:`lines` is given the
    snapshot and the monotonic time, and returns what to print.
    """

    def __init__(self, every: float = REPEAT_EVERY) -> None:
        self._throttle = Throttle(every)
        self._seen: dict[str, float] = {}  # tenant -> time of the last error said

    def lines(self, stats: Stats, now: float) -> list[str]:
        """The lines to print for ``stats`` at monotonic time ``now``."""
        lines = []
        for tenant, detail in stats.tenants.items():
            error = detail.last_error
            if error is None or detail.paused:  # a pause is logged at ERROR already
                continue
            new = error.at != self._seen.get(tenant)
            # The kind of error, not its whole text: a gateway's 5xx page carries a new
            # request id each time, and every retry would be said again.
            kind = str(error.status) if error.status is not None else error.text.split(":")[0]
            key = f"{tenant}\0{kind}"
            if not new and not detail.queued:
                continue  # said already, and nothing waits for it any more
            if not self._throttle.allows(now, key):
                continue
            self._seen[tenant] = error.at
            lines.append(
                f"{PROG}: warning: tenant {shown(tenant)}: not delivered yet, retrying: "
                f"{error_note(error)}"
            )
        return lines
