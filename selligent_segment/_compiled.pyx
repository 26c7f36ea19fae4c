# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The compiled twins of validation and encoding: ``_record.plain_normalize`` and
``_mapping.plain_encode_fields``, in C; and the journal's write that keeps the GIL
(:func:`write_holding_gil`, the twin of ``os.write``).

Guarantee: ``normalize(data)`` returns exactly what ``plain_normalize(data)`` returns (the
same fields, in the same order) and raises what it raises (the same field and reason);
``encode_fields(fields, tenant, naming, now)`` returns an ``EncodedMessage`` equal to the
plain path's, its ``body`` byte for byte, and raises what it raises; ``write_holding_gil(fd,
data)`` writes, returns and raises what ``os.write(fd, data)`` does, for ``bytes``, and says
whether the thread slept in it. ``tests/test_compiled.py`` proves the first two with
property tests over every kind of record and over arbitrary dicts, and the third on files,
pipes, errors and signals. Fields that carry a profile update, and fields or data that are
not a plain ``dict``, are handed to the plain path as they are.

What it saves (callgrind, per event, CPython 3.11): ``normalize`` 18,800 instructions ->
5,700, ``encode_fields`` 35,600 -> 24,000 (see docs/performance.md, "Compiled twins").
The bytecode is gone; ASCII text is stripped and the email checked by scanning its bytes
(the plain path calls ``str.strip`` and a regular expression); the UUID text is written
from the SHA-1 digest into a new ASCII string (the plain path formats the hex digest with
five slices and an f-string). What remains is CPython's and orjson's own work: the dicts,
``orjson.dumps``, the SHA-1.

Built by ``setup.py`` where a C compiler is found (an optional extension);
``_shortcuts.compiled_twins`` loads it unless ``SELLIGENT_SEGMENT_PURE_PYTHON`` is set.
``_record`` and ``_mapping`` then set each twin up with their own tables
(:func:`normalize_twin`, :func:`encode_twin`): this module imports none of theirs, and the
tables are written once, there.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_New
from libc.errno cimport EINTR, errno

from datetime import datetime, timezone

import orjson
from os import strerror as os_strerror

from selligent_segment._limits import MAX_MESSAGE_BYTES
from selligent_segment import _shortcuts
from selligent_segment._shortcuts import MAX_CACHED_PREFIXES, format_epoch, format_timestamp

try:  # the SHA-1 the plain path uses (_shortcuts.json_array_uuid5)
    from _sha1 import sha1 as _sha1
except ImportError:  # a Python built without it
    from hashlib import sha1 as _sha1

cdef extern from "<unistd.h>":
    ssize_t _c_write "write" (int fd, const void* buf, size_t count)

cdef extern from *:
    """
    #include <sys/resource.h>
    /* The voluntary context switches of the calling thread, or -1 where unknown. */
    static long selligent_voluntary_switches(void) {
    #ifdef RUSAGE_THREAD
        struct rusage usage;
        if (getrusage(RUSAGE_THREAD, &usage) == 0) {
            return usage.ru_nvcsw;
        }
    #endif
        return -1;
    }
    """
    long selligent_voluntary_switches()

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1
    void* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    bint PyUnicode_IS_ASCII(object)  # str.isascii(), without the method call

cdef object _dumps = orjson.dumps
cdef object _SORT_KEYS = orjson.OPT_SORT_KEYS
cdef object _UTC = timezone.utc
# Set from _mapping by encode_twin (it imports this module, never the other way round).
cdef bytes _NAMESPACE = b""
cdef object _INTEGRATION_JSON = None
cdef object _LIBRARY_JSON = None
cdef dict _PROPERTY_NAMES = {}
cdef object _make_message = None
cdef object _with_context = None
cdef object plain_encode_fields = None
cdef object too_large = None
cdef object PROFILE_UPDATE = None
cdef const char* _HEX = b"0123456789abcdef"
# (tenant, kind) -> the JSON of [tenant, kind, tag, without its "]": one cache per tag, as
# the plain path keeps one per json_array_uuid5 function.
cdef dict _event_prefixes = {}
cdef dict _content_prefixes = {}


cdef str _uuid_text(bytes digest):
    """The text of the UUIDv5 whose SHA-1 is ``digest``: version nibble 5, variant 10."""
    cdef const unsigned char* d = digest
    cdef str out = PyUnicode_New(36, 127)
    cdef unsigned char* o = <unsigned char*>PyUnicode_DATA(out)
    cdef int i
    cdef int j = 0
    cdef unsigned char b
    for i in range(16):
        if i == 4 or i == 6 or i == 8 or i == 10:
            o[j] = 45  # "-"
            j += 1
        b = d[i]
        if i == 6:
            b = (b & 0x0F) | 0x50
        elif i == 8:
            b = (b & 0x3F) | 0x80
        o[j] = _HEX[b >> 4]
        o[j + 1] = _HEX[b & 15]
        j += 2
    return out


cdef bytes _prefix(dict prefixes, tenant, str kind, str tag):
    key = (tenant, kind)
    prefix = prefixes.get(key)
    if prefix is None:
        if len(prefixes) >= MAX_CACHED_PREFIXES:
            prefixes.clear()
        whole = _dumps([tenant, kind, tag])
        prefix = _NAMESPACE + whole[: len(whole) - 1] + b","
        prefixes[key] = prefix
    return prefix


def uuid5_text(tenant, str kind, str tag, last, bint sort_keys=False):
    """``_shortcuts.json_array_uuid5(MESSAGE_ID_NAMESPACE, tag, sort_keys=...)(tenant, kind,
    last)``, for the tags ``"event_id"`` and ``"content"`` (the tests compare them); another
    tag raises ValueError (its prefixes would land in those tags' caches)."""
    if tag == "event_id":
        prefixes = _event_prefixes
    elif tag == "content":
        prefixes = _content_prefixes
    else:
        raise ValueError(f"no message-id cache for the tag {tag!r}")
    option = _SORT_KEYS if sort_keys else None
    return _uuid_text(_sha1(_prefix(prefixes, tenant, kind, tag) + _dumps(last, None, option) + b"]").digest())


cdef str _message_id(dict fields, tenant, str kind):
    """``_mapping._message_id(fields, tenant)``."""
    event_id = fields.get("event_id")
    if event_id is not None:
        return _uuid_text(
            _sha1(_prefix(_event_prefixes, tenant, kind, "event_id") + _dumps(event_id) + b"]").digest()
        )
    cdef dict content = dict(fields)
    del content["type"]
    content.pop("tenant", None)
    content.pop("integrations", None)
    content.pop("context", None)
    if "timestamp" in content:
        content["timestamp"] = format_timestamp(content["timestamp"])
    return _uuid_text(
        _sha1(
            _prefix(_content_prefixes, tenant, kind, "content") + _dumps(content, None, _SORT_KEYS) + b"]"
        ).digest()
    )


def encode_twin(mapping):
    """The compiled twin of ``mapping.plain_encode_fields``, reading the constants it needs
    from ``mapping`` (the ``_mapping`` module, fully defined)."""
    global _NAMESPACE, _INTEGRATION_JSON, _LIBRARY_JSON, _PROPERTY_NAMES, _make_message
    global _with_context, plain_encode_fields, too_large, PROFILE_UPDATE
    _NAMESPACE = mapping.MESSAGE_ID_NAMESPACE.bytes
    _INTEGRATION_JSON = mapping._INTEGRATION_JSON
    _LIBRARY_JSON = mapping._LIBRARY_JSON
    _PROPERTY_NAMES = mapping._PROPERTY_NAMES  # the same dict, not a copy
    _make_message = mapping._make_message
    _with_context = mapping._with_context
    plain_encode_fields = mapping.plain_encode_fields
    too_large = mapping.too_large
    PROFILE_UPDATE = mapping.PROFILE_UPDATE
    _event_prefixes.clear()
    _content_prefixes.clear()
    return encode_fields


def encode_fields(fields, tenant, naming, now=None):
    """``_mapping.plain_encode_fields(fields, tenant, naming, now)``, compiled."""
    if type(fields) is not dict or PROFILE_UPDATE in fields:
        return plain_encode_fields(fields, tenant, naming, now)
    cdef dict f = <dict>fields
    kind = f["type"]
    extras = f.get("properties")
    cdef dict properties = dict(extras) if extras else {}
    for name in _PROPERTY_NAMES[kind]:
        if name in f:
            properties[name] = f[name]
    email = f.get("email")
    cdef dict context
    if email is not None:
        email = email.lower()
        context = {
            "library": _LIBRARY_JSON,
            "integration": _INTEGRATION_JSON,
            "traits": {"email": email},
        }
    else:
        context = {"library": _LIBRARY_JSON, "integration": _INTEGRATION_JSON}
    if "ip" in f:
        context["ip"] = f["ip"]
    if "user_agent" in f:
        context["userAgent"] = f["user_agent"]
    if "context" in f:
        context = _with_context(context, f["context"])
    moment = f.get("timestamp") or now
    if isinstance(moment, float):
        # format_epoch(moment), its cached millisecond read here: no call when it is hit.
        lo, hi, cached = _shortcuts._millis_cache
        timestamp = cached if lo <= moment < hi else format_epoch(moment)
    else:
        timestamp = format_timestamp(moment or datetime.now(_UTC))  # looked up: freezegun
    event = naming.name(kind, tenant) if naming.tenant_overrides else naming._names[kind]
    message_uuid = _message_id(f, tenant, kind._value_)
    cdef dict message
    user_id = f.get("user_id")
    if user_id is not None:
        message = {
            "type": "track",
            "event": event,
            "userId": user_id,
            "properties": properties,
            "context": context,
            "timestamp": timestamp,
            "messageId": message_uuid,
        }
    else:
        message = {
            "type": "track",
            "event": event,
            "anonymousId": email,
            "properties": properties,
            "context": context,
            "timestamp": timestamp,
            "messageId": message_uuid,
        }
    if "integrations" in f:
        message["integrations"] = f["integrations"]
    body = _dumps(message)
    if len(body) > MAX_MESSAGE_BYTES:
        raise too_large("track", len(body))
    return _make_message((tenant, message_uuid, kind, b"%b" % body))  # exact_copy(body)


# -- normalize ---------------------------------------------------------------------------
# Set from _record by normalize_twin.
cdef object plain_normalize = None
cdef frozenset _PLAIN_TEXT = frozenset()
cdef frozenset _OBJECT_FIELDS = frozenset()
cdef dict _KIND_ALIASES = {}
cdef dict _VALIDATORS = {}
cdef dict _NOT_FOR = {}
cdef frozenset _KIND_ONLY = frozenset()  # the fields some kinds may not carry
cdef object _bad_email = None
cdef object _check_controls = None
cdef object _check_fields = None
cdef object _unknown_field = None
cdef object _missing_type = None
cdef Py_ssize_t _MAX_TEXT = 0


cdef inline bint _ascii_space(unsigned char c):
    # str.isspace() of an ASCII character: \t \n \v \f \r, \x1c-\x1f and the space.
    return c == 32 or 9 <= c <= 13 or 28 <= c <= 31


cdef str _strip_ascii(str text):
    """``text.strip()`` of an ASCII ``str``: the text itself when neither end is a space
    (``strip`` returns it then too), without the method call."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
    cdef const unsigned char* p = <const unsigned char*>PyUnicode_DATA(text)
    if n == 0 or (not _ascii_space(p[0]) and not _ascii_space(p[n - 1])):
        return text
    return text.strip()


cdef inline bint _email_char(unsigned char c):
    # [^@\s\x00-\x1f\x7f] for an ASCII character: printable, not a space, not "@".
    return 33 <= c <= 126 and c != 64


def plausible_ascii_email(str text):
    """``_record._EMAIL_RE.fullmatch(text) is not None`` for an ASCII ``text`` (the tests
    compare them)."""
    return _plausible_ascii_email(text)


cdef bint _plausible_ascii_email(str text):
    # local@label(.label)+, each part one or more _email_char, the labels without ".".
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
    cdef const unsigned char* p = <const unsigned char*>PyUnicode_DATA(text)
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t labels = 0
    cdef Py_ssize_t run = 0
    while i < n and _email_char(p[i]):
        i += 1
    if i == 0 or i >= n or p[i] != 64:  # no local part, or no "@" after it
        return False
    i += 1
    while i < n:
        if p[i] == 46:  # "."
            if run == 0:
                return False
            labels += 1
            run = 0
        elif _email_char(p[i]):
            run += 1
        else:
            return False
        i += 1
    return run > 0 and labels >= 1


def normalize_twin(record):
    """The compiled twin of ``record.plain_normalize``, reading the tables it needs from
    ``record`` (the ``_record`` module, fully defined)."""
    global plain_normalize, _PLAIN_TEXT, _OBJECT_FIELDS, _KIND_ALIASES, _VALIDATORS
    global _NOT_FOR, _bad_email, _check_controls, _check_fields
    global _unknown_field, _missing_type, _MAX_TEXT, _KIND_ONLY
    plain_normalize = record.plain_normalize
    _PLAIN_TEXT = record._PLAIN_TEXT
    _OBJECT_FIELDS = record._OBJECT_FIELDS
    # The same dicts, not copies: the twin reads exactly the tables the plain path reads.
    _KIND_ALIASES = record._KIND_ALIASES
    _VALIDATORS = record._VALIDATORS
    _NOT_FOR = record._NOT_FOR
    _KIND_ONLY = frozenset().union(*_NOT_FOR.values())
    _bad_email = record._bad_email
    _check_controls = record._check_controls
    _check_fields = record._check_fields
    _unknown_field = record._unknown_field
    _missing_type = record._missing_type
    _MAX_TEXT = record._MAX_TEXT
    return normalize


def normalize(data):
    """``_record.plain_normalize(data)``, compiled: the same fields, the same errors."""
    if type(data) is not dict:
        return plain_normalize(data)  # the Mapping check and its error are the plain path's
    cdef dict out = {}
    cdef str text
    cdef bint kind_only = False  # a field of _KIND_ONLY is set: _NOT_FOR's check to do
    for key, value in (<dict>data).items():
        if type(key) is not str and isinstance(key, str):  # a StrEnum's member: plain
            key = str.__str__(key)  # text, as orjson takes keys (journal, message id)
        if type(value) is str:
            text = <str>value
            if key in _PLAIN_TEXT and PyUnicode_IS_ASCII(text) and len(text) <= _MAX_TEXT:
                text = _strip_ascii(text)
                if text:
                    out[key] = text
                    if key in _KIND_ONLY:
                        kind_only = True
                continue
            if key == "email" and len(text) <= _MAX_TEXT and PyUnicode_IS_ASCII(text):
                text = _strip_ascii(text)
                if text:
                    if len(text) > 254 or not _plausible_ascii_email(text):
                        raise _bad_email(text)
                    out[key] = text
                continue
            if key == "type":
                kind = _KIND_ALIASES.get(text)
                if kind is not None:
                    out[key] = kind
                    continue
            elif key == "tenant" and len(text) <= _MAX_TEXT and PyUnicode_IS_ASCII(text):
                text = _strip_ascii(text)
                if text:
                    if not text.isprintable():
                        _check_controls("tenant", text)
                    out[key] = text
                continue
        validate = _VALIDATORS.get(key)
        if validate is None:
            raise _unknown_field(key)
        if value is not None:
            value = validate(value)
            if value is not None and (value or key not in _OBJECT_FIELDS):
                out[key] = value
                if key in _KIND_ONLY:
                    kind_only = True
    kind = out.get("type")
    if kind is None:
        raise _missing_type()
    if ("email" not in out and "user_id" not in out) or (
        kind_only and not (<frozenset>_NOT_FOR[kind]).isdisjoint(out)
    ):
        _check_fields(out)
    return out


# -- the journal write ------------------------------------------------------------------------


def write_holding_gil(int fd, bytes data not None):
    """``os.write(fd, data)`` without letting go of the GIL, and whether the thread slept
    in it: ``(written, slept)``. ``written`` is what ``os.write`` returns (possibly fewer
    than ``len(data)`` bytes); the OSError it raises is raised (a signal that interrupts
    the call runs its handler and the call is made again, as ``os.write`` does, PEP 475).
    ``slept`` is True when the thread made a voluntary context switch meanwhile (it waited
    for the disk, a lock, memory): every other thread of the process waited with it.
    Where that cannot be known (no ``RUSAGE_THREAD``), ``slept`` is False.

    For the journal's small writes into the page cache (about a microsecond), letting go
    of the GIL costs more than the write: another thread takes it, and the caller waits
    for it back, up to ``sys.getswitchinterval()``. ``_journal.Journal`` uses this only on
    a local file system, and not for a while after a write that slept or was slow (see
    ``_journal.SLOW_WRITE``).
    """
    cdef const char* buf = PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef long before = selligent_voluntary_switches()
    cdef ssize_t written
    cdef int err
    while True:
        written = _c_write(fd, buf, <size_t>size)
        if written >= 0:
            return written, before >= 0 and selligent_voluntary_switches() != before
        err = errno
        if err != EINTR:
            raise OSError(err, os_strerror(err))
        PyErr_CheckSignals()
