"""What DSN, ARF and heuristic parsing share: reading a message from bytes without ever
raising, header text, addresses, dates, the returned original message, the join key, the
deterministic event id, and turning fields into a record or an :class:`InputProblem`."""

from __future__ import annotations

import email
import email.errors
import email.header
import email.parser
import email.utils
import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from email.message import Message
from typing import Any

from selligent_segment._errors import InvalidEvent
from selligent_segment._record import MAX_TEXT, CallbackRecord, parse_timestamp
from selligent_segment.inputs._result import InputProblem, Parsed
from selligent_segment.inputs._transfer_encoding import undo_transfer_encoding
from selligent_segment.inputs.reports._join import Join, JoinKey

__all__ = [
    "Report",
    "address_of",
    "blocks",
    "clipped",
    "header_text",
    "make_record",
]

#: The namespace of report event ids: uuid5(namespace, "kind\nreport\nrecipient").
EVENT_ID_NAMESPACE = uuid.UUID("5d0b1a3e-7c55-4f0e-9a51-6c1b1f1e0d14")

_SPACES = re.compile(r"\s+")
# A local part may be a quoted string (RFC 5321: spaces, an "@" inside, at most 64
# octets): taken whole. An address starts only after a character it cannot hold (or at
# the start), and a quoted part is bounded: each search is linear in the text.
_QUOTED = r'"(?:[^"\\\r\n]|\\.){0,64}"'
# An unquoted local part holds no "@": with one, each "@" of an unclosed "<a@a@a@..." was
# tried as the split, the rest scanned again each time.
_ANGLE = re.compile(rf"<({_QUOTED}@[^<>\s]+|[^<>\s\"@]+@[^<>\s]+)>")
_NOT_BARE = r"\s<>()\[\],;:\"'"
_BARE = re.compile(rf"(?<![^{_NOT_BARE}])(?:{_QUOTED}|[^{_NOT_BARE}]+)@[^{_NOT_BARE}]+")
#: Envelope headers of a bounce that may hold the VERP address it was returned to.
_ENVELOPE_HEADERS = ("X-Original-To", "Delivered-To", "Envelope-To", "X-Envelope-To", "To")


def clipped(text: str | None) -> str | None:
    """``text`` cut to a text field's most characters (its end marked ``...``): a report's
    informational text (a remote server's diagnostic, the original's subject, which the
    sender of the report controls) never costs the report its record."""
    if text is None or len(text) <= MAX_TEXT:
        return text
    return text[: MAX_TEXT - 3] + "..."


def header_text(value: object) -> str | None:
    """A header value as plain, unfolded text (RFC 2047 words decoded, undecodable bytes
    replaced), or None when blank."""
    if value is None:
        return None
    if isinstance(value, email.header.Header):  # raw 8-bit bytes in the header (RFC 6532)
        value = _raw_text(value)
    text = _as_utf8(_words_decoded(str(value)))
    text = _SPACES.sub(" ", text).strip()
    return text or None


_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)\s+(?==\?)")


def _words_decoded(text: str) -> str:
    """``text`` with its RFC 2047 encoded words decoded: all at once, else (raw UTF-8
    beside them, a broken one) each on its own, a broken one kept as it is."""
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except Exception:
        return _ENCODED_WORD.sub(_word_decoded, _BETWEEN_WORDS.sub("", text))


def _word_decoded(match: re.Match[str]) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(match.group(0))))
    except Exception:  # an unknown charset, a broken word
        return match.group(0)


def _as_utf8(text: str) -> str:
    """``text`` with raw bytes kept as surrogates read as UTF-8, and any other surrogate
    (an encoded word can decode to one) replaced: text UTF-8 can hold."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _raw_text(value: email.header.Header) -> str:
    """The text of a header the parser kept as bytes (raw 8-bit, which ``str()`` turns
    into replacement characters): UTF-8, as RFC 6532 has it, or the charset it names;
    what does not decode is replaced. Encoded words in it are left for the caller."""
    parts: list[str] = []
    for chunk, charset in email.header.decode_header(value):
        if isinstance(chunk, bytes):
            name = charset if charset and charset != "unknown-8bit" else "utf-8"
            try:
                chunk = chunk.decode(name, "replace")
            except LookupError:  # a charset Python does not know
                chunk = chunk.decode("utf-8", "replace")
        parts.append(chunk)
    return "".join(parts)


def without_comments(text: str) -> str:
    """``text`` without its RFC 5322 comments (``(...)``, nested ones too, ``\\(``
    escaped inside them; an unclosed one runs to the end), stripped. One pass over
    ``text``, whatever its nesting."""
    if "(" not in text:
        return text.strip()
    kept: list[str] = []
    depth = 0
    escaped = False
    for char in text:
        if depth == 0:
            if char == "(":
                depth = 1
                kept.append(" ")
            else:
                kept.append(char)
        elif escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
    return "".join(kept).strip()


def address_of(value: str | None) -> str | None:
    """The address in a header or a DSN address field (``rfc822; a@b.c``, ``<a@b.c>``,
    ``Name <a@b.c>``), or None."""
    if not value:
        return None
    if ";" in value:
        kind, _, rest = value.partition(";")
        if kind.strip().lower() not in ("rfc822", "utf-8", "x-unix"):  # x-local, ...
            rest = value if "@" in kind else ""
        value = rest
    found = _ANGLE.search(value)
    if found is None:
        found = _BARE.search(value)
        return found.group(0).strip(".") if found else None
    return found.group(1)


def typed_value(value: str | None) -> str | None:
    """A DSN field's value without its type (``dns; mx.example.com`` -> ``mx.example.com``)."""
    if not value:
        return None
    kind, sep, rest = value.partition(";")
    text = rest.strip() if sep and " " not in kind.strip() else value.strip()
    return text or None


def date_of(value: str | None) -> datetime | None:
    """An RFC 5322 date as an aware datetime within the accepted range, else None."""
    if not value:
        return None
    try:
        moment: datetime = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return parse_timestamp(moment)
    except InvalidEvent:
        return None


def blocks(part: Message) -> list[Message]:
    """The header blocks of a ``message/delivery-status`` or ``message/feedback-report``
    part, in order, without empty ones (a leading blank line makes none). Blocks end at
    every blank or whitespace-only line: the email parser reads a whitespace-only line as
    a continuation and would join the blocks around it, so its blocks are split again."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and all(isinstance(p, Message) for p in payload):
        text = "\n\n".join(_block_text(p) for p in payload if isinstance(p, Message))
        text = _decoded(text, part.get("Content-Transfer-Encoding"))
        # Raw 8-bit text (RFC 6533's global kind is UTF-8) as the UTF-8 it is.
        text = _as_utf8(text)
    else:
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload or "")
    parser = email.parser.HeaderParser()
    chunks = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    return [parser.parsestr(chunk.strip() + "\n") for chunk in chunks if chunk.strip()]


def _decoded(text: str, encoding: object) -> str:
    """``text`` decoded from the part's ``Content-Transfer-Encoding`` when it is base64 or
    quoted-printable (the email parser reads a ``message/*`` part's encoded text as if it
    were its header blocks, so it is decoded here); as it is otherwise, or when it does
    not decode."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:  # raw 8-bit: not base64 or quoted-printable text
        return text
    decoded = undo_transfer_encoding(data, encoding)
    return text if decoded is None or decoded is data else decoded.decode("utf-8", "replace")


def _header_lines(message: Message) -> str:
    """``message``'s header lines as they were read (folds kept), each ending a line."""
    return "".join(f"{name}: {value}\n" for name, value in message.raw_items())


def _block_text(block: Message) -> str:
    """A block the parser made, as the text it was read from (its raw header lines, folds
    and whitespace-only lines kept, then any body)."""
    lines = _header_lines(block)
    # Its bytes, raw 8-bit kept as surrogates like the header lines (get_payload() would
    # replace them).
    body = block.get_payload(decode=True)
    return lines + (body.decode("ascii", "surrogateescape") if isinstance(body, bytes) else "")


# The parser reads these as a message of their own (the headers: one with no body).
_ORIGINAL_KINDS = frozenset(
    {"message/rfc822", "message/global", "message/rfc822-headers", "message/global-headers"}
)
_HEADER_KINDS = frozenset({"text/rfc822-headers"})


def _reread(inner: Message, encoding: str) -> Message:
    """The message a base64 or quoted-printable ``message/*`` part holds: the parser read
    the encoded text as a message; that text, written back as it was read (no encoding of
    the message's own undone), decoded and read again. Headers only; an empty message
    when it does not decode."""
    payload = inner.get_payload()
    if isinstance(payload, str) and any(
        isinstance(d, email.errors.MissingHeaderBodySeparatorDefect) for d in inner.defects
    ):
        # A soft line break of a long header line ("=" then a newline): the parser ended
        # the headers at the line after it; writing them back would put a blank line
        # there, and the decoded headers would end at that long line.
        raw = (_header_lines(inner) + payload).encode("ascii", "surrogateescape")
    else:
        try:
            raw = inner.as_bytes()
        except Exception:  # a generator failure on a broken part: no headers
            return Message()
    data = undo_transfer_encoding(raw, encoding)
    if data is None:
        return Message()
    return email.parser.BytesHeaderParser().parsebytes(data.lstrip())


def _parts(message: Message) -> Iterator[Message]:
    try:
        yield from message.walk()
    except (TypeError, AttributeError):  # a payload that is neither list nor text
        return


class Report:
    """One report message read from ``data`` (bytes): never raises on any input."""

    def __init__(self, data: bytes, where: str) -> None:
        self.where = where
        self.data = data
        self.message = email.message_from_bytes(data)
        own = header_text(self.message.get("Message-ID"))
        # The report's identity: its own Message-ID, else its bytes.
        self.identity = own or "sha256:" + hashlib.sha256(data).hexdigest()
        self._original: Message | bool | None = False
        self._original_headers: dict[str, str | None] = {}  # decoded once, not per block

    def parts(self) -> list[Message]:
        """Every part, the message first."""
        return list(_parts(self.message))

    def report_part(self, content_type: str) -> Message | None:
        """The first part of ``content_type`` (``message/delivery-status``, ...)."""
        for part in self.parts():
            if part.get_content_type() == content_type:
                return part
        return None

    def report_type(self) -> str | None:
        """``delivery-status``, ``feedback-report``, ... for a ``multipart/report``."""
        if self.message.get_content_type() != "multipart/report":
            return None
        kind = self.message.get_param("report-type")
        return kind.lower() if isinstance(kind, str) else None

    def original(self) -> Message | None:
        """The returned original message or its headers (``message/rfc822``,
        ``text/rfc822-headers``, ``message/rfc822-headers``; RFC 6533's
        ``message/global`` and ``message/global-headers``, base64 or not), or None."""
        if self._original is not False:
            return self._original  # type: ignore[return-value]
        found: Message | None = None
        for part in self.parts()[1:]:
            kind = part.get_content_type()
            payload = part.get_payload()
            if kind in _ORIGINAL_KINDS and isinstance(payload, list):
                inner = payload[0] if payload and isinstance(payload[0], Message) else None
                encoding = str(part.get("Content-Transfer-Encoding") or "").strip().lower()
                if inner is not None and encoding in ("base64", "quoted-printable"):
                    inner = _reread(inner, encoding)
                elif inner is not None and not inner.keys():  # a blank line first: the
                    body = inner.get_payload()  # headers were read as the body
                    if isinstance(body, str) and body.strip():
                        inner = email.parser.HeaderParser().parsestr(body.lstrip())
                if inner is not None:
                    found = inner
                    break
            elif kind in _HEADER_KINDS:
                raw = part.get_payload(decode=True)
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
                found = email.parser.HeaderParser().parsestr(text.lstrip())
                break
        self._original = found
        return found

    def original_header(self, name: str) -> str | None:
        """A header of the original message, as text."""
        if name not in self._original_headers:
            original = self.original()
            text = header_text(original.get(name)) if original is not None else None
            self._original_headers[name] = text
        return self._original_headers[name]

    def join_key(
        self, join: Join, recipient: str | None, kind: str, envelope: tuple[str, ...] = ()
    ) -> JoinKey:
        """The join key for one record: the original's Message-ID, the VERP token of the
        first envelope address that holds one, the platform's header."""
        message_id = self.original_header("Message-ID")
        if message_id is not None:
            message_id = message_id.strip().strip("<>").strip() or None
        token = None
        if join.verp is not None:
            addresses = [*envelope, *(self._header(n) for n in _ENVELOPE_HEADERS)]
            addresses.append(self.original_header("Return-Path"))
            for address in addresses:
                token = join.token_in(address)
                if token is not None:
                    break
        header = None
        for name in join.headers:
            header = self.original_header(name)
            if header is not None:
                break
        return JoinKey(message_id, token, header, recipient, kind)

    def _header(self, name: str) -> str | None:
        return header_text(self.message.get(name))

    def event_id(self, kind: str, recipient: str) -> str:
        """Deterministic: the same report and recipient give the same id, every time."""
        return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{kind}\n{self.identity}\n{recipient}"))

    def date(self) -> datetime | None:
        """The report's own ``Date``, when it is a usable timestamp."""
        return date_of(self._header("Date"))


def make_record(
    report: Report,
    where: str,
    fields: dict[str, Any],
    join: Join,
    key: JoinKey,
) -> Parsed:
    """The record of ``fields`` completed by the resolver, or the problem that stops it."""
    extra, refused = join.resolve(key)
    if refused is not None:
        return Parsed(problems=(InputProblem(where, "join", refused),))
    merged = dict(fields)
    for name, value in extra.items():
        if name == "properties" and isinstance(value, dict):
            merged["properties"] = {**value, **fields.get("properties", {})}
        elif value is not None:
            merged[name] = value
    try:
        return Parsed(records=(CallbackRecord.from_dict(merged),), places=(where,))
    except InvalidEvent as exc:
        return Parsed(problems=(InputProblem(where, exc.field, exc.reason),))
