"""Amazon SNS message signatures: the envelope SNS posts to an HTTPS subscriber
(Notification, SubscriptionConfirmation, UnsubscribeConfirmation), its canonical string,
and the RSA signature over it (``SignatureVersion`` 1: SHA1withRSA, 2: SHA256withRSA)
under the certificate at ``SigningCertURL``.

Guarantees: a certificate is fetched only from an HTTPS ``sns.<region>.amazonaws.com``
(or ``.amazonaws.com.cn``) host and the path SNS signs from
(``/SimpleNotificationService-<hex>.pem``, no query), through the injected fetcher, and
kept in a bounded cache by URL; a URL whose fetch (or certificate) failed is not asked
again for :data:`FAILURE_TTL` seconds, and its failure takes no room from the
certificates; a certificate outside its validity period is refused;
:meth:`SnsVerifier.verify` returns only a message whose signature checks against that
certificate.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import attrs

from selligent_segment.inputs.esp._common import WebhookRefused
from selligent_segment.inputs.esp._crypto import crypto

__all__ = [
    "CERT_HOST",
    "CERT_PATH",
    "FAILURE_TTL",
    "MAX_NEW_FETCHES",
    "Fetch",
    "SnsMessage",
    "SnsVerifier",
    "allowed_cert_url",
    "allowed_sns_url",
    "canonical_string",
    "default_fetch",
]

#: A fetcher: ``url -> body`` (raise any exception on failure). The seam for the network.
Fetch = Callable[[str], bytes]
#: Hosts SNS signs from and sends confirmation links on: ``sns.<region>.amazonaws.com``,
#: the region as AWS writes them (``us-east-1``, ``us-gov-west-1``, ``cn-north-1``), never
#: an S3 bucket's host (``sns.s3.amazonaws.com``, ``sns.s3-us-west-2.amazonaws.com``: a
#: bucket named ``sns`` would serve its owner's certificate).
CERT_HOST = re.compile(r"sns\.[a-z]{2}(?:-[a-z]+)+-[0-9]+\.amazonaws\.com(\.cn)?")
#: The path of SNS's signing certificates.
CERT_PATH = re.compile(r"/SimpleNotificationService-[0-9a-f]+\.pem")
#: Seconds a URL whose answer is not a certificate is not asked again (one whose fetch
#: failed: :data:`FETCH_RETRY_AFTER`): a forged request costs at most one fetch per URL in
#: that time.
FAILURE_TTL = 60.0
#: Seconds a URL whose fetch failed (a timeout, a 5xx, a network error: perhaps for a
#: moment) is not asked again: under SNS's 20 s between retries (its default HTTPS
#: policy retries 3 times, then drops the message), so that each retry fetches again.
FETCH_RETRY_AFTER = 10.0
#: Fetches of certificates not in the cache, at most, in any :data:`FAILURE_TTL` seconds:
#: each forged request may name a URL of its own (the ``<hex>`` is the sender's choice),
#: and a fetch holds one of the threads every provider's requests share. Beyond it the
#: request is answered 503 (SNS retries); SNS itself signs from very few certificates.
MAX_NEW_FETCHES = 8
#: Failed URLs remembered (each for :data:`FAILURE_TTL` seconds).
FAILED_URLS = 1024
#: The largest certificate or confirmation answer read.
MAX_FETCH_BYTES = 64 * 1024

_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")


@attrs.frozen
class SnsMessage:
    """A verified SNS message: its ``type``, ``message_id``, ``topic_arn``, ``message``
    (the payload text), ``timestamp`` and, for (un)subscription confirmations, the
    ``subscribe_url``."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: str
    subscribe_url: str | None = None


def canonical_string(envelope: dict[str, Any]) -> bytes:
    """The text SNS signs: ``name\\nvalue\\n`` for each signed key present, in order."""
    keys = _NOTIFICATION_KEYS if envelope.get("Type") == "Notification" else _SUBSCRIPTION_KEYS
    parts = []
    for key in keys:
        value = envelope.get(key)
        if value is None:
            continue  # Subject is optional; the others are checked present by the caller
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")


def allowed_sns_url(url: object) -> bool:
    """Whether ``url`` is an HTTPS URL on an SNS host (no user info, default port)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = parts.hostname or ""
    return (
        parts.scheme == "https"
        and port in (None, 443)
        and "@" not in parts.netloc
        and CERT_HOST.fullmatch(host) is not None
    )


def allowed_cert_url(url: object) -> bool:
    """Whether ``url`` is an SNS signing certificate's URL: :func:`allowed_sns_url` with
    the path ``/SimpleNotificationService-<hex>.pem`` and no query or fragment."""
    if not allowed_sns_url(url):
        return False
    parts = urllib.parse.urlsplit(str(url))
    return not parts.query and not parts.fragment and CERT_PATH.fullmatch(parts.path) is not None


def default_fetch(url: str) -> bytes:
    """GET ``url`` over HTTPS (certifi's CA bundle, 10 s timeout, no redirects), at most
    :data:`MAX_FETCH_BYTES`; raises on any failure or a status other than 200."""
    import certifi
    import urllib3

    with urllib3.PoolManager(ca_certs=certifi.where(), timeout=10.0, retries=False) as pool:
        answer = pool.request("GET", url, preload_content=False, redirect=False)
        try:
            if answer.status != 200:
                raise OSError(f"HTTP {answer.status}")
            body = answer.read(MAX_FETCH_BYTES + 1)
        finally:
            answer.release_conn()
    if len(body) > MAX_FETCH_BYTES:
        raise OSError(f"answer over {MAX_FETCH_BYTES} bytes")
    return bytes(body)


class SnsVerifier:
    """Checks SNS signatures, fetching certificates through ``fetch`` (at most
    :data:`MAX_NEW_FETCHES` in :data:`FAILURE_TTL` seconds) and keeping the last
    ``cache_size`` by URL (and up to :data:`FAILED_URLS` failed URLs, each for
    :data:`FAILURE_TTL` seconds).
    ``now`` is the wall clock (for certificate validity and failures' age). Thread-safe."""

    def __init__(
        self,
        fetch: Fetch = default_fetch,
        *,
        cache_size: int = 16,
        now: Callable[[], float],
        provider: str = "ses",
    ) -> None:
        self._fetch = fetch
        self._size = cache_size
        self._now = now
        self._provider = provider
        self._certs: OrderedDict[str, Any] = OrderedDict()
        self._failed: OrderedDict[str, tuple[float, str, int]] = OrderedDict()
        self._fetches: deque[float] = deque()  # when the recent new fetches began
        self._lock = threading.Lock()

    @property
    def cached(self) -> int:
        """Certificates in the cache."""
        with self._lock:
            return len(self._certs)

    def _refuse(self, reason: str, status: int = 403) -> WebhookRefused:
        return WebhookRefused(self._provider, reason, status=status)

    def _failure(self, url: str, reason: str, status: int) -> WebhookRefused:
        ttl = FETCH_RETRY_AFTER if status == 503 else FAILURE_TTL
        with self._lock:
            self._failed[url] = (self._now() + ttl, reason, status)
            self._failed.move_to_end(url)
            while len(self._failed) > FAILED_URLS:
                self._failed.popitem(last=False)
        return self._refuse(reason, status)

    def _take_fetch(self) -> None:
        """Count one fetch of a certificate not in the cache; raise 503 when
        :data:`MAX_NEW_FETCHES` began in the last :data:`FAILURE_TTL` seconds."""
        now = self._now()
        with self._lock:
            while self._fetches and self._fetches[0] <= now - FAILURE_TTL:
                self._fetches.popleft()
            if len(self._fetches) >= MAX_NEW_FETCHES:
                reason = "too many signing certificates not yet known asked for; retry"
                raise self._refuse(reason, 503)
            self._fetches.append(now)

    def _certificate(self, url: str) -> Any:
        with self._lock:
            cert = self._certs.get(url)
            if cert is not None:
                self._certs.move_to_end(url)
            failed = self._failed.get(url) if cert is None else None
        if failed is not None:
            until, reason, status = failed
            if self._now() < until:
                raise self._refuse(reason, status)
        if cert is None:
            self._take_fetch()
            try:
                pem = self._fetch(url)
            except Exception as exc:
                reason = f"could not fetch the signing certificate ({type(exc).__name__})"
                raise self._failure(url, reason, 503) from None
            c = crypto()
            try:
                cert = c.x509.load_pem_x509_certificate(pem)
            except ValueError:
                reason = "the signing certificate is not a PEM certificate"
                raise self._failure(url, reason, 403) from None
            with self._lock:
                self._failed.pop(url, None)
                self._certs[url] = cert
                while len(self._certs) > self._size:
                    self._certs.popitem(last=False)
        now = datetime.fromtimestamp(self._now(), timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise self._refuse("the signing certificate is outside its validity period")
        return cert

    def verify(self, envelope: dict[str, Any]) -> SnsMessage:
        """The :class:`SnsMessage` of a parsed envelope whose signature is good; raises
        :class:`WebhookRefused` otherwise (503 when the certificate could not be fetched,
        so that SNS retries)."""
        kind = envelope.get("Type")
        if kind not in TYPES:
            raise self._refuse("not an SNS message (Type)", 400)
        keys = _NOTIFICATION_KEYS if kind == "Notification" else _SUBSCRIPTION_KEYS
        for key in keys:
            value = envelope.get(key)
            if key != "Subject" and not isinstance(value, str):
                raise self._refuse(f"the SNS field {key} is missing", 400)
        version = envelope.get("SignatureVersion")
        if version not in ("1", "2"):
            raise self._refuse("unknown SignatureVersion (expected 1 or 2)")
        url = envelope.get("SigningCertURL")
        if not allowed_cert_url(url):
            raise self._refuse(
                "SigningCertURL is not an "
                "https://sns.<region>.amazonaws.com/SimpleNotificationService-<hex>.pem URL"
            )
        signature_text = envelope.get("Signature")
        if not isinstance(signature_text, str):
            raise self._refuse("no Signature", 401)
        try:
            signature = base64.b64decode(signature_text, validate=True)
        except (binascii.Error, ValueError):  # ValueError: text that is not ASCII
            raise self._refuse("bad signature") from None
        cert = self._certificate(str(url))
        c = crypto()
        key = cert.public_key()
        if not isinstance(key, c.rsa.RSAPublicKey):
            raise self._refuse("the signing certificate's key is not RSA")
        # SignatureVersion 1 is SHA1withRSA: SNS still signs with it unless told otherwise.
        digest = c.hashes.SHA1() if version == "1" else c.hashes.SHA256()
        try:
            key.verify(signature, canonical_string(envelope), c.padding.PKCS1v15(), digest)
        except c.InvalidSignature:
            raise self._refuse("bad signature") from None
        return SnsMessage(
            type=str(kind),
            message_id=envelope["MessageId"],
            topic_arn=envelope["TopicArn"],
            message=envelope["Message"],
            timestamp=envelope["Timestamp"],
            subscribe_url=envelope.get("SubscribeURL"),
        )
