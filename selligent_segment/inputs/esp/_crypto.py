"""The one place ``cryptography`` is imported (the ``webhooks`` extra), lazily, so that the
library without the extra imports and only a signature check that needs it says what to
install."""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

__all__ = ["crypto"]


@functools.cache
def crypto() -> Any:
    """A namespace with ``serialization``, ``hashes``, ``ec``, ``padding``, ``x509`` and
    ``InvalidSignature``, built once (every call returns the same one); raises
    :class:`ImportError` naming the extra when it is missing (and again at the next call:
    a failure is not cached)."""
    try:
        from cryptography import exceptions, x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    except ImportError as exc:  # pragma: no cover - the test extra has it
        raise ImportError(
            "ESP webhook signatures (SES/SNS, SendGrid) need the 'cryptography' package: "
            "pip install 'selligent-segment[webhooks]'"
        ) from exc
    space = ModuleType("selligent_segment_crypto")
    space.serialization = serialization  # type: ignore[attr-defined]
    space.hashes = hashes  # type: ignore[attr-defined]
    space.ec = ec  # type: ignore[attr-defined]
    space.rsa = rsa  # type: ignore[attr-defined]
    space.padding = padding  # type: ignore[attr-defined]
    space.x509 = x509  # type: ignore[attr-defined]
    space.InvalidSignature = exceptions.InvalidSignature  # type: ignore[attr-defined]
    return space
