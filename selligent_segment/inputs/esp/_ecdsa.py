"""The ECDSA signature scheme of SendGrid's signed event webhook: P-256, SHA-256, over the
timestamp header's text followed by the raw body; the signature and the verification key
are base64 (the key is DER SubjectPublicKeyInfo, as SendGrid's settings show it).

Guarantee: :meth:`EcdsaKeys.verify` is True only for a signature made with the private key
of the given public key over exactly ``payload``, and False (never an exception) for any
malformed signature text; a malformed key raises ``ValueError``.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections import OrderedDict
from typing import Any

from selligent_segment.inputs.esp._crypto import crypto

__all__ = ["EcdsaKeys"]


class EcdsaKeys:
    """Verifies ECDSA signatures, keeping the last ``size`` loaded keys (by their text)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._keys: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def _key(self, key_b64: str) -> Any:
        with self._lock:
            key = self._keys.get(key_b64)
            if key is not None:
                self._keys.move_to_end(key_b64)
                return key
        c = crypto()
        text = key_b64.strip()
        if text.startswith("-----BEGIN"):
            key = c.serialization.load_pem_public_key(text.encode("ascii"))
        else:
            try:
                der = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("the verification key is not base64") from None
            key = c.serialization.load_der_public_key(der)
        if not isinstance(key, c.ec.EllipticCurvePublicKey):
            raise ValueError("the verification key is not an elliptic-curve public key")
        with self._lock:
            self._keys[key_b64] = key
            while len(self._keys) > self._size:
                self._keys.popitem(last=False)
        return key

    def verify(self, key_b64: str, signature_b64: str, payload: bytes) -> bool:
        """Whether ``signature_b64`` signs ``payload`` under the key ``key_b64``."""
        key = self._key(key_b64)
        try:
            signature = base64.b64decode(signature_b64.strip(), validate=True)
        except (binascii.Error, ValueError):  # ValueError: text that is not ASCII
            return False
        c = crypto()
        try:
            key.verify(signature, payload, c.ec.ECDSA(c.hashes.SHA256()))
        except c.InvalidSignature:
            return False
        return True
