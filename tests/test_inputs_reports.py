"""inputs/reports: the corpus of real-format DSN and ARF messages against their expected
records, the bounce classification, the join (VERP, header, resolver), deterministic
event ids, and the .eml / mbox / Maildir readers."""

from __future__ import annotations

import base64
import json
import mailbox
import os
import quopri
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from selligent_segment import ConfigurationError
from selligent_segment.inputs import InputError, InputProblem, Parsed
from selligent_segment.inputs.reports import (
    Join,
    JoinKey,
    _heuristic,
    _message,
    bounce_type,
    parse_arf,
    parse_dsn,
    parse_path,
    parse_report,
    read_messages,
    table_resolver,
)
from selligent_segment.inputs.reports._message import EVENT_ID_NAMESPACE, without_comments
from selligent_segment.inputs.reports._status import basic_code_in

CORPUS = Path(__file__).parent / "corpus" / "reports"
MESSAGES = sorted(CORPUS.glob("*.eml"))
VERP = r"bounces\+(?P<token>[^@]+)@mail\.platform\.example"


def corpus_join() -> Join:
    """The platform of the corpus: VERP tokens, X-Platform-Recipient, a join table."""
    table = json.loads((CORPUS / "join.json").read_text())
    return Join(resolver=table_resolver(table), verp=VERP)


def as_json(parsed: Parsed) -> dict[str, Any]:
    return {
        "records": [json.loads(json.dumps(r.to_dict())) for r in parsed.records],
        "problems": [str(p) for p in parsed.problems],
    }


@pytest.mark.parametrize("path", MESSAGES, ids=[p.stem for p in MESSAGES])
def test_corpus_message_gives_its_expected_records_and_problems(path: Path) -> None:
    expected = json.loads(path.with_suffix(".expected.json").read_text())
    assert as_json(parse_report(path.read_bytes(), path.name, corpus_join())) == expected


def test_the_corpus_covers_every_kind_of_report() -> None:
    names = {p.stem for p in MESSAGES}
    for family in ("postfix", "exim", "sendmail", "office365", "gmail", "yahoo", "qmail"):
        assert any(n.startswith(family) for n in names), family
    for case in ("arf-", "arf-redacted", "delayed", "multi-recipient", "no-original"):
        assert any(case in n for n in names), case
    assert sum(n.startswith("malformed") for n in names) >= 4


def _records(name: str, join: Join | None = None) -> Parsed:
    data = (CORPUS / f"{name}.eml").read_bytes()
    return parse_report(data, name, join or corpus_join())


# -- classification ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("5.1.1", "hard"),
        ("5.1.10", "hard"),
        ("5.2.1", "hard"),
        ("5.4.4", "hard"),
        ("550", "hard"),
        ("5.2.2", "soft"),  # mailbox full: the documented exception
        ("552", "soft"),
        ("5.3.4", "soft"),
        ("5.7.1", "soft"),  # a policy block refuses the sender, not the address
        ("5.7.26", "soft"),
        ("4.4.7", "soft"),
        ("421", "soft"),
        ("2.0.0", None),
        (None, None),
    ],
)
def test_bounce_type_follows_the_status_class_with_its_exceptions(
    status: str | None, expected: str | None
) -> None:
    assert bounce_type(status) == expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("delivery to user450@example.net failed", None),
        ("host mx250-1.example.net said: 550 no such user", "550"),
        ("host mx-450-a.example.net said: 550 no such user", "550"),
        ("550-5.1.1 The email account that you tried to reach does not exist", "550"),
        ("smtp;421 try later", "421"),
    ],
)
def test_a_basic_code_is_never_read_inside_an_address_or_a_host_name(
    text: str, code: str | None
) -> None:
    assert basic_code_in(text) == code


def test_a_generic_status_takes_the_diagnostics_more_specific_code() -> None:
    (record,) = _records("exim-mailbox-full").records  # Status: 5.0.0, 552 5.2.2 in the text
    assert (record.smtp_status, record.bounce_type) == ("5.2.2", "soft")


def test_delayed_delivered_and_relayed_recipients_are_not_bounces() -> None:
    assert _records("postfix-delayed") == Parsed()
    emails = [r.email for r in _records("multi-recipient-mixed").records]
    assert emails == ["ann@example.net", "bob@example.org", "dee@example.info"]


def test_not_spam_and_auth_failure_feedback_make_no_record() -> None:
    assert _records("arf-not-spam") == Parsed()
    data = (CORPUS / "arf-not-spam.eml").read_bytes().replace(b"not-spam", b"auth-failure")
    assert parse_arf(data, "x.eml") == Parsed()


@pytest.mark.parametrize("value", [b"abuse (user report)", b"(from FBL) abuse", b"ABUSE"])
def test_a_comment_in_the_feedback_type_is_not_part_of_it(value: bytes) -> None:
    """RFC 5322 allows comments in a structured field (RFC 5965 has ``Feedback-Type`` as
    a token): a complaint whose type carries one is still the complaint."""
    data = (CORPUS / "arf-yahoo-abuse.eml").read_bytes()
    data = data.replace(b"Feedback-Type: abuse\n", b"Feedback-Type: " + value + b"\n")
    (record,) = parse_arf(data, "x.eml", corpus_join()).records
    assert record == _records("arf-yahoo-abuse").records[0]
    not_spam = (CORPUS / "arf-not-spam.eml").read_bytes()
    assert parse_arf(not_spam.replace(b"not-spam", b"not-spam (moved)"), "x.eml") == Parsed()


MIXED = CORPUS / "multi-recipient-mixed.eml"
MIXED_BLOCKS = b"""Reporting-MTA: dns; mail.platform.example
X-Postfix-Queue-ID: 4Zc0Pz1Qk2z7vNb
X-Postfix-Sender: rfc822; campaigns@mail.platform.example
Arrival-Date: Fri, 20 Nov 2026 08:00:00 +0000 (UTC)

Final-Recipient: rfc822; ann@example.net"""


def _mixed_with(old: bytes, new: bytes, *, crlf: bool = False) -> bytes:
    """multi-recipient-mixed.eml with ``old`` replaced by ``new`` (once at least)."""
    data = MIXED.read_bytes()
    assert old in data
    data = data.replace(old, new)
    return data.replace(b"\n", b"\r\n") if crlf else data


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("line", [b" ", b"\t", b"  \t "])
def test_a_whitespace_only_line_between_recipient_blocks_ends_a_block(
    line: bytes, crlf: bool
) -> None:
    data = _mixed_with(
        b"\n\nFinal-Recipient: rfc822; ", b"\n" + line + b"\nFinal-Recipient: rfc822; "
    )
    parsed = parse_dsn(data, "x.eml", corpus_join())
    assert parsed.problems == ()
    assert [(r.email, r.smtp_status) for r in parsed.records] == [
        ("ann@example.net", "5.1.1"),
        ("bob@example.org", "4.4.7"),
        ("dee@example.info", "5.7.1"),
    ]
    assert parsed == parse_dsn(MIXED.read_bytes(), "x.eml", corpus_join())


@pytest.mark.parametrize("lead", [b"\n", b"\n\n", b" \n"])
def test_a_blank_line_before_the_first_block_shifts_no_block(lead: bytes) -> None:
    data = _mixed_with(MIXED_BLOCKS, lead + MIXED_BLOCKS)
    parsed = parse_dsn(data, "x.eml", corpus_join())
    assert parsed.problems == ()
    assert [r.email for r in parsed.records] == [
        "ann@example.net",
        "bob@example.org",
        "dee@example.info",
    ]
    assert {r.properties["reporting_mta"] for r in parsed.records} == {"mail.platform.example"}


@pytest.mark.parametrize(
    "blocks",
    [
        b"Final-Recipient: rfc822; ann@example.net",  # no per-message block at all
        MIXED_BLOCKS.replace(b"\n\nFinal-Recipient", b"\nFinal-Recipient"),  # one merged
    ],
    ids=["no-per-message-block", "merged-with-the-first-recipient"],
)
def test_a_first_block_that_names_a_recipient_is_that_recipients(blocks: bytes) -> None:
    """RFC 3464 puts a per-message block first; a report without it (or with it merged
    into the first recipient's) still has that recipient, who was taken for the
    per-message block and lost without a word."""
    parsed = parse_dsn(_mixed_with(MIXED_BLOCKS, blocks), "x.eml", corpus_join())
    assert parsed.problems == ()
    assert [(r.email, r.smtp_status) for r in parsed.records] == [
        ("ann@example.net", "5.1.1"),
        ("bob@example.org", "4.4.7"),
        ("dee@example.info", "5.7.1"),
    ]


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable"])
def test_a_delivery_status_part_with_a_transfer_encoding_is_decoded(encoding: str) -> None:
    # The email parser reads an encoded message/delivery-status part's text as if it were
    # its header blocks: the report was lost ("no per-recipient block").
    data = MIXED.read_bytes()
    head, rest = data.split(b"Content-Type: message/delivery-status\n\n", 1)
    status, tail = rest.split(b"\n--4Zc0Pz1Qk2z7vNb", 1)
    if encoding == "base64":
        encoded = base64.encodebytes(status + b"\n")
    else:
        encoded = quopri.encodestring(status + b"\n", quotetabs=True)  # every space =20
    data = (
        head
        + b"Content-Type: message/delivery-status\nContent-Transfer-Encoding: "
        + encoding.encode()
        + b"\n\n"
        + encoded
        + b"\n--4Zc0Pz1Qk2z7vNb"
        + tail
    )
    parsed = parse_dsn(data, "x.eml", corpus_join())
    assert parsed.problems == ()
    assert parsed == parse_dsn(MIXED.read_bytes(), "x.eml", corpus_join())


@pytest.mark.parametrize("lead", [b"\n", b" \n"])
def test_a_feedback_report_split_by_blank_lines_keeps_its_fields(lead: bytes) -> None:
    data = (CORPUS / "arf-yahoo-abuse.eml").read_bytes()
    data = data.replace(b"Feedback-Type: abuse\n", lead + b"Feedback-Type: abuse\n")
    data = data.replace(b"Source-IP:", b" \nSource-IP:")
    (record,) = parse_arf(data, "x.eml", corpus_join()).records
    assert record == _records("arf-yahoo-abuse").records[0]


#: The status part of a report of one failed recipient, u@example.com.
ONE_FAILED = (
    "Reporting-MTA: dns; mx.example\n\nFinal-Recipient: rfc822; u@example.com\n"
    "Action: failed\nStatus: 5.1.1\n"
)


def _dsn(
    status: str,
    *,
    kind: str = "message/delivery-status",
    original_kind: str = "text/rfc822-headers",
    original: str = "Message-ID: <orig-1@platform.example>\nSubject: Hi\n",
) -> bytes:
    """A one-part-each delivery-status report: ``status`` as its report part (of
    ``kind``), ``original`` as the returned message (of ``original_kind``); UTF-8."""
    return f"""From: MAILER-DAEMON@mx.example
To: bounces@platform.example
Date: Sat, 21 Nov 2026 08:00:05 +0000
Message-ID: <dsn-1@mx.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BB"

--BB
Content-Type: text/plain

Delivery failed.

--BB
Content-Type: {kind}

{status}
--BB
Content-Type: {original_kind}

{original}
--BB--
""".encode()


def test_raw_utf8_in_header_text_is_read_as_utf8() -> None:
    """Mail with SMTPUTF8 carries raw UTF-8 in its headers (RFC 6532): the returned
    subject, the diagnostic and a UTF-8 recipient address are read as such, not as
    replacement characters (a wrong ``anonymousId``)."""
    status = (
        "Reporting-MTA: dns; mx.example\n\n"
        "Original-Recipient: utf-8; j\u00f6rg@example.com\n"
        "Final-Recipient: rfc822; jorg@example.com\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 destinataire \u00e9chou\u00e9\n"
    )
    original = "Message-ID: <o@p>\nSubject: Soldes d'\u00e9t\u00e9\n\nbody\n"
    data = _dsn(status, original_kind="message/rfc822", original=original)
    (record,) = parse_dsn(data, "x.eml").records
    assert record.email == "j\u00f6rg@example.com"
    assert record.email_subject == "Soldes d'\u00e9t\u00e9"
    assert record.bounce_reason == "550 5.1.1 destinataire \u00e9chou\u00e9"


@pytest.mark.parametrize("encoding", ["8bit", "base64"])
def test_an_internationalized_report_is_read_like_a_plain_one(encoding: str) -> None:
    """RFC 6533: a report of an SMTPUTF8 message names its parts
    ``message/global-delivery-status`` and ``message/global`` (or
    ``message/global-headers``), either possibly base64: the bounce and the original's
    Message-ID and subject are read from them as from the plain kinds (as they are from
    ``message/rfc822-headers``, which was read as empty)."""
    status = (
        "Reporting-MTA: dns; mx.example\n\n"
        "Final-Recipient: utf-8; j\u00f6rg@example.com\nAction: failed\nStatus: 5.1.1\n"
    )
    original = "Message-ID: <orig-9@platform.example>\nSubject: \u00e9t\u00e9\n\nbody\n"
    kinds = ("message/global", "message/global-headers", "message/rfc822-headers")
    for original_kind in kinds:
        part = original if original_kind == "message/global" else original.split("\n\n")[0]
        if encoding == "base64":
            part = base64.encodebytes(part.encode()).decode()
            original_kind += "\nContent-Transfer-Encoding: base64"
        data = _dsn(
            status,
            kind="message/global-delivery-status",
            original_kind=original_kind,
            original=part,
        )
        parsed = parse_dsn(data, "x.eml")
        assert parsed.problems == ()
        (record,) = parsed.records
        assert record.email == "j\u00f6rg@example.com"
        assert record.kind == "bounced"
        assert record.email_subject == "\u00e9t\u00e9", original_kind
        assert record.properties["original_message_id"] == "<orig-9@platform.example>"


@pytest.mark.parametrize(
    "field",
    [
        'rfc822; "john.doe"@example.com',
        'rfc822; <"j..d"@example.com>',
        'rfc822; "j\\"d"@example.com',
    ],
)
def test_a_quoted_local_part_is_the_recipients_address(field: str) -> None:
    """RFC 5321 lets a local part be a quoted string: the bounce is that address's,
    quotes and all, not "missing"."""
    status = (
        "Reporting-MTA: dns; mx.example\n\n"
        f"Final-Recipient: {field}\nAction: failed\nStatus: 5.1.1\n"
    )
    parsed = parse_dsn(_dsn(status), "x.eml")
    assert parsed.problems == ()
    (record,) = parsed.records
    assert record.email == field.partition("; ")[2].strip("<>")


@pytest.mark.parametrize("local", ['"john doe"', '"ann@example.org"'])
def test_a_quoted_local_part_with_a_space_or_an_at_sign_is_refused_as_an_email(
    local: str,
) -> None:
    """Such an address is refused by the library's email rule (no space, one ``@``),
    with that reason; it was said to be missing, and ``"ann@example.org"@x`` was read
    as ann@example.org: another person's bounce."""
    status = (
        "Reporting-MTA: dns; mx.example\n\n"
        f"Final-Recipient: rfc822; {local}@example.com\nAction: failed\nStatus: 5.1.1\n"
    )
    parsed = parse_dsn(_dsn(status), "x.eml")
    assert parsed.records == ()
    assert [(p.field, p.reason) for p in parsed.problems] == [
        ("email", "not a plausible email address")
    ]


def test_comments_are_left_out_at_any_depth_with_their_escapes() -> None:
    assert without_comments("abuse (a \\) (b) c) ") == "abuse"
    assert without_comments("mx.example.com. (unclosed ( comment") == "mx.example.com."
    assert without_comments("(x)abuse(y)") == "abuse"
    assert without_comments("no comment ) here") == "no comment ) here"


@pytest.mark.parametrize(
    "field",
    [
        "Final-Recipient: rfc822; " + '\\"' * 500_000,
        "Final-Recipient: rfc822; " + "a" * 1_000_000,
    ],
    ids=["escaped-quotes", "one-long-run"],
)
def test_an_address_field_a_megabyte_long_is_read_in_one_pass(field: str) -> None:
    """Each search for the address is linear in the field: a megabyte of escaped
    quotes (each once the start of a quoted local part running to the end) or of one
    run of letters (each once the start of a bare address) took hours."""
    status = f"Reporting-MTA: dns; mx.example\n\n{field}\nAction: failed\nStatus: 5.1.1\n"
    parsed = parse_dsn(_dsn(status), "x.eml")
    assert parsed.records == ()
    assert [(p.where, p.field) for p in parsed.problems] == [("x.eml", "Final-Recipient")]


def test_an_unclosed_angle_bracket_before_many_at_signs_is_read_in_one_pass() -> None:
    """``<a@a@a@...`` with no ``>``: each ``@`` was tried as the split of the address,
    the rest scanned again each time (64 KB took 13 s)."""
    field = "Final-Recipient: rfc822; <" + "a@" * 100_000
    status = f"Reporting-MTA: dns; mx.example\n\n{field}\nAction: failed\nStatus: 5.1.1\n"
    parsed = parse_dsn(_dsn(status), "x.eml")
    assert parsed.records == ()
    assert [(p.where, p.field) for p in parsed.problems] == [("x.eml", "email")]


def test_the_originals_headers_are_decoded_once_for_all_recipient_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each recipient block decoded the original's headers again: a report of 2,000
    short blocks and a long encoded subject took a minute."""
    calls: list[object] = []
    real = _message.header_text

    def counted(value: object) -> str | None:
        calls.append(value)
        return real(value)

    monkeypatch.setattr(_message, "header_text", counted)
    blocks = "".join(
        f"\nFinal-Recipient: rfc822; u{i}@example.com\nAction: failed\nStatus: 5.1.1\n"
        for i in range(50)
    )
    status = "Reporting-MTA: dns; mx.example\n" + blocks
    parsed = parse_dsn(_dsn(status), "x.eml")
    assert len(parsed.records) == 50
    assert {r.email_subject for r in parsed.records} == {"Hi"}
    assert sum(1 for value in calls if value == "Hi") == 1


def test_a_diagnostic_or_subject_over_a_text_fields_limit_is_cut_not_the_bounce_lost() -> None:
    """A remote server's reply of 9,000 characters (it writes the diagnostic) made the
    record invalid: the hard bounce was lost for an informational field."""
    diagnostic = "smtp; 550 5.1.1 " + "x" * 9_000
    status = ONE_FAILED + f"Diagnostic-Code: {diagnostic}\n"
    original = "Message-ID: <orig-1@platform.example>\nSubject: " + "s" * 9_000 + "\n"
    (record,) = parse_dsn(_dsn(status, original=original), "x.eml").records
    assert record.bounce_reason is not None
    assert record.email_subject is not None
    assert len(record.bounce_reason) == len(record.email_subject) == 8192
    assert record.bounce_reason.startswith("550 5.1.1 xxx")
    assert record.bounce_reason.endswith("x...")
    assert record.bounce_type == "hard"


def test_a_feedback_type_nested_a_hundred_thousand_deep_is_read_in_one_pass() -> None:
    comment = "(" * 100_000 + ")" * 100_000
    data = (CORPUS / "arf-yahoo-abuse.eml").read_bytes()
    data = data.replace(b"Feedback-Type: abuse\n", f"Feedback-Type: abuse {comment}\n".encode())
    (record,) = parse_arf(data, "x.eml", corpus_join()).records
    assert record == _records("arf-yahoo-abuse").records[0]


@pytest.mark.parametrize("body_encoding", ["7bit", "base64"])
def test_a_quoted_printable_original_is_decoded_whatever_its_own_body_encoding(
    body_encoding: str,
) -> None:
    """A ``message/global`` the MTA encoded quoted-printable (``=`` written ``=3D``),
    holding a message whose own body is base64 (as Gmail sends UTF-8): the original's
    headers are read decoded (its Message-ID, the join key, kept ``=3D``)."""
    body = "caf\u00e9\n" if body_encoding == "7bit" else "Y2Fmw6kK"
    original = quopri.encodestring(
        "Message-ID: <CAF=abc@mail.example.com>\nSubject: caf\u00e9\n"
        f"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: {body_encoding}\n"
        f"\n{body}\n".encode()
    ).decode()
    data = _dsn(
        ONE_FAILED,
        kind="message/global-delivery-status",
        original_kind="message/global\nContent-Transfer-Encoding: quoted-printable",
        original=original,
    )
    (record,) = parse_dsn(data, "x.eml").records
    assert record.properties["original_message_id"] == "<CAF=abc@mail.example.com>"
    assert record.email_subject == "caf\u00e9"


@pytest.mark.parametrize("kind", ["message/global", "message/global-headers"])
def test_a_quoted_printable_original_keeps_the_headers_after_a_long_line(kind: str) -> None:
    """Quoted-printable breaks a line over 76 characters with a soft break (``=`` then a
    newline): the headers read ended at such a line, and the join header, the Message-ID
    and the rest of the subject after it were lost."""
    subject = "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e \u2014 nos nouveaut\u00e9s de novembre"
    headers = (
        f"Subject: {subject}\n"
        "List-Unsubscribe: <https://t.platform.example/u/r-1/aGVsbG8td29ybGQtdG9rZW4>, "
        "<mailto:u-r-1@platform.example>\n"
        "Message-ID: <20261120.em-42.r-1@mail.platform.example>\n"
        "X-Platform-Recipient: r-1\n"
    )
    encoded = quopri.encodestring(headers.encode()).decode()
    assert "=\n" in encoded  # a soft line break
    data = _dsn(
        ONE_FAILED,
        kind="message/global-delivery-status",
        original_kind=f"{kind}\nContent-Transfer-Encoding: quoted-printable",
        original=encoded + ("\nbody\n" if kind == "message/global" else ""),
    )
    join = Join(resolver=table_resolver({"r-1": {"tenant": "acme", "email_id": "em-42"}}))
    (record,) = parse_dsn(data, "x.eml", join).records
    assert record.properties["original_message_id"] == (
        "<20261120.em-42.r-1@mail.platform.example>"
    )
    assert record.email_subject == subject
    assert (record.tenant, record.email_id) == ("acme", "em-42")


def test_a_returned_message_after_a_blank_line_keeps_its_headers() -> None:
    """A ``message/rfc822`` part whose message starts after one more blank line: its
    headers were read as its body (no Message-ID, subject or join key)."""
    original = "\nMessage-ID: <orig-9@platform.example>\nSubject: Weekend sale\n\nbody\n"
    (record,) = parse_dsn(
        _dsn(ONE_FAILED, original_kind="message/rfc822", original=original), "x.eml"
    ).records
    assert record.properties["original_message_id"] == "<orig-9@platform.example>"
    assert record.email_subject == "Weekend sale"


def test_encoded_words_beside_raw_utf8_are_decoded_too() -> None:
    original = "Message-ID: <o@p>\nSubject: caf\u00e9 =?utf-8?q?na=C3=AFve?=\n\nbody\n"
    data = _dsn(ONE_FAILED, original_kind="message/rfc822", original=original)
    (record,) = parse_dsn(data, "x.eml").records
    assert record.email_subject == "caf\u00e9 na\u00efve"


def test_an_encoded_word_decoding_to_a_lone_surrogate_costs_nothing() -> None:
    """``=?unicode-escape?q?\\ud800?=`` decodes to a code point UTF-8 cannot hold: the
    report was lost ("cannot be parsed (UnicodeEncodeError)"); it is replaced."""
    data = _dsn(ONE_FAILED).replace(
        b"Message-ID: <dsn-1@mx.example>", b"Message-ID: =?unicode-escape?q?<\\ud800@x>?="
    )
    parsed = parse_dsn(data, "x.eml")
    assert parsed.problems == ()
    assert [r.email for r in parsed.records] == ["u@example.com"]


# -- join ------------------------------------------------------------------------------


def test_without_a_resolver_records_carry_what_the_report_says_and_the_default_tenant() -> None:
    (record,) = _records("postfix-user-unknown", Join(tenant="acme")).records
    assert (record.tenant, record.email, record.email_id) == ("acme", "nobody@example.net", None)
    assert record.properties["original_message_id"] == "<20261120.em-42.r-1@mail.platform.example>"


def test_the_resolver_sees_every_join_key_a_report_carries() -> None:
    seen: list[JoinKey] = []

    def resolver(key: JoinKey) -> Mapping[str, Any] | None:
        seen.append(key)
        return {"tenant": "t1", "email_id": "e1", "properties": {"source": "mta"}}

    join = Join(resolver=resolver, verp=VERP, headers="X-Platform-Recipient")
    (record,) = _records("postfix-user-unknown", join).records
    assert seen == [
        JoinKey(
            message_id="20261120.em-42.r-1@mail.platform.example",
            verp="t-acme.em-42.r-1",
            header="r-1",
            recipient="nobody@example.net",
            kind="bounced",
        )
    ]
    assert (record.tenant, record.email_id) == ("t1", "e1")
    assert record.properties["source"] == "mta"
    assert record.properties["bounce_confidence"] == "dsn"


def test_a_verp_callable_is_given_each_envelope_address() -> None:
    def token(address: str) -> str | None:
        return address.split("+")[1].split("@")[0] if "+" in address else None

    seen: list[JoinKey] = []
    join = Join(resolver=lambda key: seen.append(key), verp=token)  # type: ignore[func-returns-value]
    _records("exim-no-original", join)
    assert seen[0].verp == "t-globex.em-50.r-9"
    assert seen[0].message_id is None  # no original message in that report


def test_a_resolver_that_refuses_or_fails_costs_only_its_record() -> None:
    def refusing(key: JoinKey) -> Mapping[str, Any] | None:
        if key.recipient == "bob@example.org":
            raise KeyError("no send for bob")
        if key.recipient == "dee@example.info":
            raise RuntimeError("postgres://user:secret@db/platform is down")
        return None

    parsed = _records("multi-recipient-mixed", Join(resolver=refusing))
    assert [r.email for r in parsed.records] == ["ann@example.net"]
    assert [str(p) for p in parsed.problems] == [
        "multi-recipient-mixed recipient 2: join: the resolver refused it: \"'no send for bob'\"",
        "multi-recipient-mixed recipient 4: join: the resolver raised RuntimeError",
    ]


def test_each_record_of_a_report_carries_its_place() -> None:
    # Named where it is when refused later (too large, a tenant without a key).
    parsed = _records("multi-recipient-mixed")
    places = [parsed.place(i, "-") for i in range(len(parsed.records))]
    assert places == [f"multi-recipient-mixed recipient {n}" for n in (1, 2, 4)], [
        r.email for r in parsed.records
    ]


def test_a_resolver_may_not_rewrite_the_reports_facts() -> None:
    join = Join(resolver=lambda key: {"bounce_type": "soft"})
    parsed = _records("postfix-user-unknown", join)
    assert parsed.records == ()
    assert [p.reason for p in parsed.problems] == ["the resolver may not set bounce_type"]


def test_a_redacted_complaint_without_a_join_is_a_problem_naming_why() -> None:
    parsed = _records("arf-redacted-aol", Join())
    assert parsed.records == ()
    (problem,) = parsed.problems
    assert problem.field == "Original-Rcpt-To"
    assert "redacted" in problem.reason


def test_a_bad_verp_setting_is_a_configuration_error_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="verp: not a regular expression"):
        Join(verp="bounces+(")
    with pytest.raises(ConfigurationError, match="verp: the pattern needs a group"):
        Join(verp="bounces")


# -- identity ---------------------------------------------------------------------------


def test_event_ids_are_the_same_for_the_same_report_and_recipient() -> None:
    data = (CORPUS / "multi-recipient-mixed.eml").read_bytes()
    first = parse_report(data, "a", Join())
    again = parse_report(data, "b", Join(tenant="other"))
    ids = [r.event_id for r in first.records]
    assert ids == [r.event_id for r in again.records]
    assert len(set(ids)) == 3
    report_id = "<20261121080005.4Zc0Pz1Qk2z7vNb@mail.platform.example>"
    assert ids[0] == str(uuid.uuid5(EVENT_ID_NAMESPACE, f"bounced\n{report_id}\nann@example.net"))


def test_a_report_without_message_id_is_identified_by_its_bytes() -> None:
    data = (CORPUS / "postfix-user-unknown.eml").read_bytes().replace(b"Message-Id:", b"X-Old:")
    (one,) = parse_report(data, "x", Join()).records
    (same,) = parse_report(data, "y", Join()).records
    (other,) = parse_report(data + b"\n", "z", Join()).records
    assert one.event_id == same.event_id != other.event_id


# -- which parser --------------------------------------------------------------------


def test_parse_dsn_refuses_an_arf_report_and_parse_arf_a_bounce() -> None:
    arf = (CORPUS / "arf-yahoo-abuse.eml").read_bytes()
    dsn = (CORPUS / "postfix-user-unknown.eml").read_bytes()
    assert [p.field for p in parse_dsn(arf, "a.eml").problems] == ["report"]
    (problem,) = parse_arf(dsn, "d.eml").problems
    assert problem.reason.startswith("not an ARF feedback report")
    assert len(parse_dsn(dsn, "d.eml").records) == 1
    assert len(parse_arf(arf, "a.eml").records) == 1


def test_an_old_format_bounce_gives_each_recipient_its_own_code_not_the_next_ones() -> None:
    """qmail lists each failed address with what its server said, one paragraph each: a
    full mailbox (552, soft) is not given the next address's 5.1.1 (hard), which would
    have a deliverable address suppressed."""
    records = {r.email: r for r in _records("qmail-two-recipients").records}
    assert (records["full@example.org"].smtp_status, records["full@example.org"].bounce_type) == (
        "552",
        "soft",
    )
    assert (
        records["nouser@example.org"].smtp_status,
        records["nouser@example.org"].bounce_type,
    ) == ("5.1.1", "hard")


def test_without_flufl_bounce_an_old_format_bounce_says_how_to_read_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_heuristic, "_detector", [None])
    (problem,) = _records("qmail-no-mailbox").problems
    assert "pip install 'selligent-segment[bounces]'" in problem.reason


def test_a_failing_detector_is_a_problem_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(message: object) -> Any:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")

    monkeypatch.setattr(_heuristic, "_detector", [broken])
    (problem,) = _records("qmail-no-mailbox").problems
    assert problem.reason == "the bounce detectors failed on it (UnicodeDecodeError)"


def test_an_old_format_delay_warning_is_not_a_bounce() -> None:
    assert _records("gmail-delay-warning") == Parsed()  # flufl.bounce: a temporary failure


def test_only_the_permanent_failures_of_the_detector_are_bounces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def detect(message: object) -> Any:
        return frozenset({b"slow@example.com"}), frozenset({b"ann@example.net"})

    monkeypatch.setattr(_heuristic, "_detector", [detect])
    parsed = _records("qmail-no-mailbox")
    assert parsed.problems == ()
    assert [(r.email, r.bounce_type) for r in parsed.records] == [("ann@example.net", "hard")]


# -- readers ---------------------------------------------------------------------------


def test_an_mbox_gives_each_message_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(str(path))
    for name in ("postfix-user-unknown", "postfix-delayed", "malformed-out-of-office"):
        box.add((CORPUS / f"{name}.eml").read_bytes())
    box.close()
    results = list(parse_path(str(path), parse_dsn, corpus_join()))
    assert [where for where, _ in results] == [f"{path}:MESSAGE-{n}" for n in (1, 2, 3)]
    assert [r.email for r in results[0][1].records] == ["nobody@example.net"]
    assert results[1][1] == Parsed()
    assert [p.where for p in results[2][1].problems] == [f"{path}:MESSAGE-3"]
    # the same report through a single .eml gives the same event id
    single = parse_dsn((CORPUS / "postfix-user-unknown.eml").read_bytes(), "x", Join())
    assert results[0][1].records[0].event_id == single.records[0].event_id


@pytest.mark.parametrize("kind", ["mbox", "eml"])
def test_a_pipe_is_read_once_as_the_same_file_would_be(tmp_path: Path, kind: str) -> None:
    """``ingest dsn <(zcat bounces.mbox.gz)``: the kind check read the start of the pipe,
    which the reading after it then missed (the message's first bytes lost, or an mbox
    read as one broken message)."""
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(str(path))
    for name in ("postfix-user-unknown", "postfix-delayed", "arf-yahoo-abuse"):
        box.add((CORPUS / f"{name}.eml").read_bytes())
    box.close()
    source = path if kind == "mbox" else CORPUS / "postfix-user-unknown.eml"
    expected = [data for _, data in read_messages(str(source))]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"open({str(fifo)!r}, 'wb').write(open({str(source)!r}, 'rb').read())",
        ]
    )
    try:
        found = list(read_messages(str(fifo)))
    finally:
        assert writer.wait(30) == 0
    assert [data for _, data in found] == expected
    names = [f"{fifo}:MESSAGE-{n}" for n in (1, 2, 3)] if kind == "mbox" else [str(fifo)]
    assert [where for where, _ in found] == names


def test_a_crlf_mbox_reads_the_same_from_a_file_and_through_a_pipe(tmp_path: Path) -> None:
    """Found by a review: for an mbox of CRLF lines, ``mailbox.mbox`` kept the blank line
    that separates two messages (it looks for a bare ``\\n``) and the pipe reader did not,
    so a report without a Message-ID had another event id read through
    ``<(zcat bounces.mbox.gz)`` than from the file: re-running sent duplicates."""
    messages = [
        (CORPUS / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        for name in ("postfix-user-unknown.eml", "postfix-delayed.eml")
    ]
    path = tmp_path / "crlf.mbox"
    path.write_bytes(
        b"".join(b"From a Sat Nov 21 08:00:00 2026\r\n" + m + b"\r\n" for m in messages)
    )
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = subprocess.Popen(
        [sys.executable, "-c", f"open({str(fifo)!r}, 'wb').write(open({str(path)!r}, 'rb').read())"]
    )
    try:
        piped = [data for _, data in read_messages(str(fifo))]
    finally:
        assert writer.wait(30) == 0
    from_file = [data for _, data in read_messages(str(path))]
    assert from_file == piped == messages


def test_an_mbox_through_a_pipe_is_handed_out_message_by_message(tmp_path: Path) -> None:
    """An mbox through a pipe was read whole, then split, before its first message was
    handed out: a few GB of bounces needed several times that in memory."""
    first = (CORPUS / "postfix-user-unknown.eml").read_bytes()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code = (
        "import sys; out = open(sys.argv[1], 'wb'); "
        "out.write(b'From a Sat Nov 21 08:00:00 2026\\n' + open(sys.argv[2], 'rb').read() "
        "+ b'\\nFrom b Sat Nov 21 08:00:01 2026\\n'); out.flush(); "
        "sys.stdin.readline(); out.write(b'Subject: second\\n\\nbody\\n')"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code, str(fifo), str(CORPUS / "postfix-user-unknown.eml")],
        stdin=subprocess.PIPE,
    )
    assert writer.stdin is not None
    got: list[tuple[str, bytes | InputProblem]] = []
    messages = read_messages(str(fifo))
    reader = threading.Thread(target=lambda: got.append(next(messages)))
    try:
        reader.start()
        reader.join(30)  # the writer holds the rest back until the first is out
        assert got == [(f"{fifo}:MESSAGE-1", first)]
    finally:
        writer.stdin.write(b"go\n")
        writer.stdin.close()
        assert writer.wait(30) == 0
    assert [where for where, _ in messages] == [f"{fifo}:MESSAGE-2"]


def test_a_maildir_gives_its_messages_in_name_order(tmp_path: Path) -> None:
    box = mailbox.Maildir(str(tmp_path / "Maildir"))
    for name in ("arf-yahoo-abuse", "arf-not-spam"):
        box.add((CORPUS / f"{name}.eml").read_bytes())
    box.close()
    found = list(read_messages(str(tmp_path / "Maildir")))
    assert [where for where, _ in found] == [f"{tmp_path / 'Maildir'}:MESSAGE-{n}" for n in (1, 2)]
    assert all(isinstance(data, bytes) and b"feedback-report" in data for _, data in found)


def test_a_single_message_file_is_located_by_its_name() -> None:
    path = str(CORPUS / "exim-mailbox-full.eml")
    ((where, parsed),) = list(parse_path(path, parse_dsn))
    assert where == path
    assert len(parsed.records) == 1


def test_an_unreadable_path_is_an_input_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.mbox: path: cannot read"):
        list(read_messages(str(tmp_path / "missing.mbox")))
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a Maildir"):
        list(read_messages(str(tmp_path / "plain")))
