"""The compiled twins (``_compiled.pyx``) against the plain paths they stand in for.

Every message ``encode_fields``' twin makes must be the plain path's, byte for byte, and
every error the plain path's, field and reason: property tests over every kind of record,
tenant, naming and time, and the edges (a profile update, a message over 32 KB, a mapping
that is not a dict). ``normalize``'s twin must return the same fields in the same order,
or the same error, for any dict: valid records, valid records with bad fields added,
arbitrary keys and values. The suite runs against the twins wherever they were built (CI
builds them: a C compiler is there), so the rest of the tests check them too.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import types
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mapping_properties import record_dicts, tenants
from test_shortcuts import outcome

from selligent_segment import (
    EventKind,
    EventNaming,
    ProfileUpdates,
    _mapping,
    _record,
    _shortcuts,
)
from selligent_segment._mapping import MESSAGE_ID_NAMESPACE
from selligent_segment._record import FIELD_NAMES, PROFILE_UPDATE, normalize
from selligent_segment._shortcuts import PURE_PYTHON_VARIABLE, json_array_uuid5

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PURE = os.environ.get(PURE_PYTHON_VARIABLE, "") not in ("", "0")
try:
    from selligent_segment import _compiled as compiled
except ImportError:  # not built (no C compiler): the plain path is all there is
    if os.environ.get("CI"):  # CI builds it (.ci/run checks the wheel uses it too)
        raise
    pytest.skip("the compiled twins are not built here", allow_module_level=True)

plain = _mapping.plain_encode_fields
# The twins as the modules get them (set up from their tables), also when the environment
# turned them off for the rest of the suite.
twin = compiled.encode_twin(_mapping)
normalize_twin = compiled.normalize_twin(_record)

namings = st.sampled_from(
    [
        EventNaming(),
        EventNaming(profile="segment-spec"),
        EventNaming(overrides={EventKind.OPENED: "Opened It"}),
        EventNaming(tenant_overrides={"acme": {EventKind.DELIVERED: "Acme Delivered"}}),
    ]
)
# None (the current time) in test_without_a_time_both_paths_read_the_same_clock.
nows = st.one_of(
    st.floats(min_value=946_684_800.0, max_value=4_000_000_000.0),
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2090, 1, 1)).map(
        lambda d: d.replace(tzinfo=timezone(timedelta(hours=3)))
    ),
)


_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # orjson refuses beyond


def test_the_suite_runs_against_the_twin_where_it_is_built() -> None:
    from selligent_segment import _emitter
    from selligent_segment.intake import _journal, _memory
    from selligent_segment.spool import _postgres_record

    used = plain if PURE else twin
    assert _mapping.encode_fields is used
    for module in (_memory, _journal, _postgres_record):
        assert module.encode_fields is used
    assert _record.normalize is (_record.plain_normalize if PURE else normalize_twin)
    assert _emitter.normalize is _record.normalize


@SETTINGS
@given(
    data=record_dicts(),
    tenant=st.one_of(st.just("default"), st.just("acme"), tenants),
    naming=namings,
    now=nows,
)
def test_the_twin_makes_the_plain_paths_message_byte_for_byte(
    data: dict[str, Any], tenant: str, naming: EventNaming, now: Any
) -> None:
    fields = normalize(data)
    made = twin(fields, tenant, naming, now)
    assert made == plain(fields, tenant, naming, now)  # the body byte for byte among them


@settings(SETTINGS, max_examples=20)
@given(data=record_dicts(), now=nows)
def test_a_record_with_a_profile_update_gives_the_plain_paths_identify(
    data: dict[str, Any], now: Any
) -> None:
    fields = normalize(data)
    update = ProfileUpdates().update_for(fields) or {"traits": {"x": True}, "at": "x_at"}
    fields[PROFILE_UPDATE] = update
    assert outcome(twin, fields, "t", EventNaming(), now) == outcome(
        plain, fields, "t", EventNaming(), now
    )


def test_without_a_time_both_paths_read_the_same_clock() -> None:
    fields = normalize({"type": "opened", "email": "a@example.com"})
    with freeze_time("2031-02-03 04:05:06.789"):
        made = twin(fields, "t", EventNaming(), None)
        assert made == plain(fields, "t", EventNaming(), None)
    assert b'"timestamp":"2031-02-03T04:05:06.789Z"' in made.body


def test_a_message_over_32_kb_raises_the_plain_paths_error() -> None:
    fields = normalize(
        {"type": "opened", "email": "a@example.com", "properties": {"big": "x" * 33_000}}
    )
    expected = outcome(plain, fields, "t", EventNaming(), 1.7e9)
    assert expected[:2] == ("refused", "record")
    assert "32 KB" in expected[2]
    assert outcome(twin, fields, "t", EventNaming(), 1.7e9) == expected


def test_a_mapping_that_is_not_a_dict_is_encoded_as_the_plain_path_does() -> None:
    fields = types.MappingProxyType(normalize({"type": "click", "user_id": 7, "link_url": "u"}))
    assert twin(fields, "t", EventNaming(), 1.7e9) == plain(fields, "t", EventNaming(), 1.7e9)


def test_errors_inside_the_message_are_the_plain_paths() -> None:
    # Not what normalize makes, but what a damaged journal record could revive to: the
    # same error from both paths, whatever step it comes from.
    good = normalize({"type": "opened", "email": "a@example.com", "event_id": "e"})
    cases: list[dict[str, Any]] = [
        {**good, "type": "opened"},  # a kind that is not an EventKind
        {**good, "event_id": {1: 2}},  # an event id orjson refuses
        {**good, "email": 5},  # no .lower()
        {k: v for k, v in good.items() if k != "type"},
        {**good, "properties": {"x": object()}},
    ]
    for fields in cases:
        expected = outcome(plain, fields, "t", EventNaming(), 1.7e9)
        assert isinstance(expected, tuple), fields
        assert outcome(twin, fields, "t", EventNaming(), 1.7e9) == expected


@SETTINGS
@given(
    tenant=tenants,
    kind=st.sampled_from([k.value for k in EventKind]),
    last=st.one_of(
        st.text(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.dictionaries(st.text(max_size=5), _int64 | st.text(max_size=5), max_size=4),
    ),
    sort_keys=st.booleans(),
)
def test_uuid5_text_is_the_plain_uuid5(tenant: str, kind: str, last: Any, sort_keys: bool) -> None:
    for tag in ("event_id", "content"):
        expected = str(
            uuid.uuid5(
                MESSAGE_ID_NAMESPACE,
                orjson.dumps(
                    [tenant, kind, tag, last], option=orjson.OPT_SORT_KEYS if sort_keys else None
                ).decode(),
            )
        )
        assert compiled.uuid5_text(tenant, kind, tag, last, sort_keys) == expected
        assert (
            json_array_uuid5(MESSAGE_ID_NAMESPACE, tag, sort_keys=sort_keys)(tenant, kind, last)
            == expected
        )


def test_uuid5_text_raises_what_orjson_raises() -> None:
    with pytest.raises(orjson.JSONEncodeError):
        compiled.uuid5_text("t", "opened", "event_id", 2**70)


@pytest.mark.parametrize(("value", "compiled_used"), [("1", False), ("0", True), ("", True)])
def test_the_environment_variable_turns_the_twin_off(value: str, compiled_used: bool) -> None:
    env = dict(os.environ, **{PURE_PYTHON_VARIABLE: value})
    code = (
        "from selligent_segment import _mapping, _record\n"
        "print(_mapping.encode_fields is not _mapping.plain_encode_fields"
        " and _record.normalize is not _record.plain_normalize)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == str(compiled_used)


# -- normalize ---------------------------------------------------------------------------

_keys = st.one_of(st.sampled_from(sorted(FIELD_NAMES)), st.text(max_size=8), st.integers())
_texts = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(max_codepoint=127), max_size=30),  # ASCII, controls included
    st.sampled_from(["", "  ", " a@b.co ", "a@b", "x" * 9000, "é" * 300, "a\x00b", "\u202e"]),
    st.sampled_from(["opened", "Open", " click ", "spam", "nope", "hard", "SOFT", "10.0.0.1"]),
)
_values = st.one_of(
    _texts,
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1)),
)
any_dicts = st.dictionaries(_keys, _values, max_size=8)


@SETTINGS
@given(data=st.one_of(record_dicts(), any_dicts))
def test_the_normalize_twin_returns_and_raises_what_the_plain_path_does(data: Any) -> None:
    expected = outcome(_record.plain_normalize, data)
    got = outcome(normalize_twin, data)
    assert got == expected
    if isinstance(expected, dict):
        assert list(got) == list(expected)  # the same order of fields, too


@SETTINGS
@given(data=record_dicts(), extra=st.dictionaries(_keys, _values, min_size=1, max_size=3))
def test_one_bad_field_in_a_valid_record_gives_the_plain_paths_error(
    data: dict[str, Any], extra: dict[str, Any]
) -> None:
    data = {**data, **extra}
    assert outcome(normalize_twin, data) == outcome(_record.plain_normalize, data)


class _Key(str, enum.Enum):
    """Field names as members of an enum of str (a StrEnum): keys made plain text."""

    TYPE = "type"
    EMAIL = "email"
    REF = "ref"
    NOPE = "no_such_field"


@pytest.mark.parametrize(
    "data",
    [
        None,
        [("type", "opened")],
        "opened",
        types.MappingProxyType({"type": "opened", "email": "a@b.co"}),
        types.MappingProxyType({"type": "opened"}),
        {},
        {"email": "a@b.co"},
        {"type": "opened", "email": "  "},
        {"type": "bounce", "email": "a@b.co", "link_url": "u"},
        {_Key.TYPE: "opened", _Key.EMAIL: "a@b.co", "properties": {_Key.REF: 1}},
        {_Key.TYPE: "opened", _Key.EMAIL: "a@b.co", _Key.NOPE: 1},
    ],
)
def test_the_normalize_twin_on_the_edges(data: Any) -> None:
    assert outcome(normalize_twin, data) == outcome(_record.plain_normalize, data)


_ascii_emailish = st.text(
    st.sampled_from([*"ab.@-_+", " ", "\t", "\x00", "\x1f", "\x7f", "\x1c", "Z", "9"]), max_size=12
)


@settings(max_examples=3000, deadline=None)
@given(text=st.one_of(_ascii_emailish, st.text(st.characters(max_codepoint=127), max_size=12)))
def test_the_ascii_email_check_is_the_pattern(text: str) -> None:
    assert compiled.plausible_ascii_email(text) is (_record._EMAIL_RE.fullmatch(text) is not None)


@pytest.mark.parametrize(
    "text",
    ["a@b.c", "a.b@c.d.e", "a@b", "@b.c", "a@.b", "a@b.", "a@b..c", "a@@b.c", "a b@c.d", ".@a.b"],
)
def test_the_ascii_email_check_on_the_edges(text: str) -> None:
    assert compiled.plausible_ascii_email(text) is (_record._EMAIL_RE.fullmatch(text) is not None)


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(st.sampled_from(["a", " ", "\t", "\n", "\x0b", "\x0c", "\r", "\x1c", "\x1f"])),
    key=st.sampled_from(["email_subject", "tenant"]),
)
def test_ascii_text_is_stripped_as_str_strip_does(text: str, key: str) -> None:
    data = {"type": "opened", "user_id": "u", key: text}
    assert outcome(normalize_twin, data) == outcome(_record.plain_normalize, data)


def test_times_in_the_cached_millisecond_give_the_plain_paths_text() -> None:
    fields = normalize({"type": "opened", "email": "a@example.com"})
    naming = EventNaming()
    for base in (1_700_000_000.0004, 1_700_000_000.9985, 1_800_000_123.5):
        for step in range(4):  # the first misses the cache, the others hit it
            now = base + step * 1e-7
            assert twin(fields, "t", naming, now) == plain(fields, "t", naming, now)


def test_uuid5_text_refuses_a_tag_it_keeps_no_cache_for() -> None:
    # A third tag would share the content ids' cache (keyed by tenant and kind) and give
    # every later content id of that tenant and kind a wrong prefix.
    with pytest.raises(ValueError, match="profile_update"):
        compiled.uuid5_text("t", "opened", "profile_update", "x")
    fields = normalize({"type": "opened", "email": "a@example.com"})
    assert twin(fields, "t", EventNaming(), 1.7e9) == plain(fields, "t", EventNaming(), 1.7e9)


def test_a_record_without_a_type_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setitem(_record._VALIDATORS, "ip", lambda v: calls.append(v) or _record._ip(v))
    data = {"email": "a@example.com", "ip": "10.0.0.1"}
    assert outcome(normalize_twin, data) == ("refused", "type", "missing")
    assert calls == ["10.0.0.1"]


def test_the_message_id_caches_start_again_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "MAX_CACHED_PREFIXES", 3)
    naming = EventNaming()
    for round_ in range(3):
        for i in range(7):
            with_id = normalize({"type": "opened", "email": "a@b.co", "event_id": f"e{round_}"})
            without = normalize({"type": "opened", "email": f"a{round_}@b.co"})
            for fields in (with_id, without):
                tenant = f"tenant-{i}"
                assert twin(fields, tenant, naming, 1.7e9) == plain(fields, tenant, naming, 1.7e9)


@pytest.mark.parametrize(
    "email",
    [
        "a" * 249 + "@b.co",  # 254 characters: the longest accepted
        "a" * 250 + "@b.co",  # 255: refused by length
        "a" * (_record._MAX_TEXT - 5) + "@b.co",  # at _MAX_TEXT
        "a" * (_record._MAX_TEXT - 4) + "@b.co",  # over it: through _email
        " \x1ca@b.co\x1f",
        "a@b.co\x00",
        "a\x7f@b.co",
        "\ta@b.co\n",
    ],
)
def test_ascii_emails_on_the_edges_of_length_and_controls(email: str) -> None:
    data = {"type": "opened", "email": email}
    assert outcome(normalize_twin, data) == outcome(_record.plain_normalize, data)


@settings(max_examples=1000, deadline=None)
@given(email=_ascii_emailish)
def test_any_ascii_email_is_refused_or_kept_as_the_plain_path_does(email: str) -> None:
    data = {"type": "opened", "email": email}
    assert outcome(normalize_twin, data) == outcome(_record.plain_normalize, data)


@pytest.mark.parametrize("size", [_record._MAX_TEXT, _record._MAX_TEXT + 1])
def test_text_at_the_length_limit(size: int) -> None:
    for text in ("x" * size, " " + "x" * (size - 2) + " "):
        data = {"type": "opened", "user_id": "u", "email_subject": text, "tenant": text}
        assert outcome(normalize_twin, data) == outcome(_record.plain_normalize, data)


def test_the_built_twin_is_not_older_than_its_source() -> None:
    # An editable install builds the module into the tree: after an edit of the .pyx
    # (or a checkout), the tests would still run the old one until `pip install -e .`.
    built = Path(compiled.__file__)
    source = built.parent / "_compiled.pyx"
    if source.exists():
        assert built.stat().st_mtime >= source.stat().st_mtime, "rebuild: pip install -e ."


# -- the journal's write that keeps the GIL (the twin of os.write) -----------------------------


def held(fd: int, data: bytes) -> int:
    """``write_holding_gil`` as ``os.write``: the bytes written."""
    written, _ = compiled.write_holding_gil(fd, data)
    return written


def _write_outcome(write: Any, fd: int, data: Any) -> tuple[str, Any]:
    """What ``write(fd, data)`` returns, or the type, errno and text of what it raises."""
    try:
        return ("returned", write(fd, data))
    except OSError as exc:
        return ("raised", (type(exc), exc.errno, exc.strerror))


@given(st.binary(max_size=20_000))
@SETTINGS
def test_write_holding_gil_writes_and_returns_what_os_write_does(data: bytes) -> None:
    files = []
    for write in (os.write, held):
        with tempfile.TemporaryFile() as f:
            f.write(b"head")
            f.flush()
            got = _write_outcome(write, f.fileno(), data)
            f.seek(0)
            files.append((got, f.read()))
    assert files[0] == files[1] == (("returned", len(data)), b"head" + data)


def _small_pipe(*, blocking: bool) -> tuple[int, int]:
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(write, blocking)
    return read, write


def test_write_holding_gil_writes_part_and_refuses_as_os_write_does() -> None:
    for size in (100, 4096, 10_000):  # fits, fills, partly written
        outcomes = []
        for write in (os.write, held):
            read, fd = _small_pipe(blocking=False)
            try:
                first = _write_outcome(write, fd, b"x" * size)
                full = _write_outcome(write, fd, b"y" * 10)  # a full pipe: EAGAIN
                outcomes.append((first, full if size >= 4096 else None, os.read(read, 20_000)))
            finally:
                os.close(read)
                os.close(fd)
        assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == ("returned", 4096)
    assert outcomes[0][1][1][0] is BlockingIOError
    with open("/dev/full", "wb") as full_disk:  # ENOSPC, the journal's SpoolFull
        results = {_write_outcome(w, full_disk.fileno(), b"z") for w in (os.write, held)}
    assert results == {("raised", (OSError, errno.ENOSPC, os.strerror(errno.ENOSPC)))}
    closed, other = os.pipe()
    os.close(closed)
    os.close(other)
    results = {_write_outcome(w, other, b"z") for w in (os.write, held)}
    assert results == {("raised", (OSError, errno.EBADF, os.strerror(errno.EBADF)))}


@pytest.mark.parametrize("data", [None, "text", bytearray(b"b"), memoryview(b"m")])
def test_write_holding_gil_takes_bytes_only(data: Any) -> None:
    """``bytes`` only (the journal hands it nothing else): never a pointer into an object
    that is not one, as ``None`` would give."""
    read, fd = os.pipe()
    try:
        with pytest.raises(TypeError):
            compiled.write_holding_gil(fd, data)
        os.set_blocking(read, False)
        with pytest.raises(BlockingIOError):  # nothing was written
            os.read(read, 10)
    finally:
        os.close(read)
        os.close(fd)


def test_write_holding_gil_says_a_write_that_did_not_wait_did_not_sleep() -> None:
    read, fd = _small_pipe(blocking=True)
    try:
        assert compiled.write_holding_gil(fd, b"room") == (4, False)
    finally:
        os.close(read)
        os.close(fd)


def _interrupted_write(write: Any, handler_raises: bool) -> tuple[tuple[Any, ...], bool]:
    """``write`` of 100 bytes into a full pipe, blocked until a SIGALRM handler empties
    the pipe (and may raise): what came of it, and whether the signal came too early
    (before the write was called: then nothing was interrupted)."""
    read, fd = _small_pipe(blocking=True)
    os.write(fd, b"f" * 4096)  # full: the next write blocks until the handler reads
    writing = [False]
    early = [False]

    def drain(signum: int, frame: Any) -> None:
        early[0] = not writing[0]
        assert os.read(read, 8192) == b"f" * 4096
        if handler_raises:
            raise KeyboardInterrupt("from the handler")

    previous = signal.signal(signal.SIGALRM, drain)
    timer = signal.setitimer(signal.ITIMER_REAL, 0.1)  # pytest-timeout's, if any
    try:
        try:
            writing[0] = True
            outcome: tuple[Any, ...] = ("returned", write(fd, b"w" * 100), os.read(read, 8192))
        except KeyboardInterrupt as exc:
            outcome = ("raised", str(exc), b"")
    finally:
        signal.setitimer(signal.ITIMER_REAL, *timer)
        signal.signal(signal.SIGALRM, previous)
        os.close(read)
        os.close(fd)
    return outcome, early[0]


@pytest.mark.parametrize("handler_raises", [False, True])
def test_write_holding_gil_runs_signal_handlers_and_carries_on_as_os_write_does(
    handler_raises: bool,
) -> None:
    """A signal that interrupts a write blocked on a full pipe runs its Python handler,
    which empties the pipe (and may raise); if it does not raise, the write is made again
    (PEP 475), as ``os.write`` does, and the twin says it slept. A signal that came before
    the write (a loaded machine) interrupted nothing: that try is made again."""
    outcomes = []
    for write in (os.write, compiled.write_holding_gil):
        for _ in range(5):
            outcome, early = _interrupted_write(write, handler_raises)
            if not early:
                break
        assert not early, "the signal came before the write five times"
        outcomes.append(outcome)
    if handler_raises:
        assert outcomes == [("raised", "from the handler", b"")] * 2
    else:
        assert outcomes == [("returned", 100, b"w" * 100), ("returned", (100, True), b"w" * 100)]


def test_a_twin_that_is_not_built_is_not_used_without_a_word(
    monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    def absent(name: str) -> Any:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.delenv(PURE_PYTHON_VARIABLE, raising=False)
    monkeypatch.setattr(_shortcuts.importlib, "import_module", absent)
    assert _shortcuts.compiled_twins() is None
    assert not recwarn.list


@pytest.mark.parametrize(
    "error",
    [
        ImportError("_compiled.so: undefined symbol: PyUnicode_New"),
        ModuleNotFoundError("No module named 'orjson'", name="orjson"),
    ],
)
def test_a_twin_that_cannot_be_loaded_is_not_used_and_says_why(
    monkeypatch: pytest.MonkeyPatch, error: ImportError
) -> None:
    def broken(name: str) -> Any:
        raise error

    monkeypatch.delenv(PURE_PYTHON_VARIABLE, raising=False)
    monkeypatch.setattr(_shortcuts.importlib, "import_module", broken)
    with pytest.warns(RuntimeWarning, match="cannot be loaded") as caught:
        assert _shortcuts.compiled_twins() is None
    assert str(error) in str(caught[0].message)
