"""Where callbacks come from: adapters that turn what mail systems really send into
:class:`~selligent_segment.CallbackRecord` objects for an :class:`~selligent_segment.Emitter`.

- ``reports/``: delivery status notifications (RFC 3464 bounces) and ARF feedback-loop
  reports (RFC 5965 spam complaints), from ``.eml`` files, mboxes and Maildirs.
- ``esp/``: the webhooks of Amazon SES (via SNS), SendGrid, Mailgun, Postmark and SparkPost,
  each with its signature check, as functions (bytes + headers in, records out) and thin ASGI
  routes.
- ``tracking/``: the platform's own open pixel, click redirect and RFC 8058 one-click
  unsubscribe, as an ASGI application, with the token and ``List-Unsubscribe`` helpers.

Every adapter returns a :class:`Parsed`: the records it could make and, for what it could
not, an :class:`InputProblem` naming where (``FILE:LINE``, ``FILE:MESSAGE-N``), the field
and the reason. An adapter never raises anything but :class:`InputError` (a
:class:`~selligent_segment.SelligentSegmentError`), and one bad item never costs another.
"""

from __future__ import annotations

from selligent_segment.inputs._result import InputError, InputProblem, Parsed

__all__ = ["InputError", "InputProblem", "Parsed"]
