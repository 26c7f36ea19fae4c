"""One-click POST bodies (inputs/tracking/_one_click.py): both encodings RFC 8058 names."""

from __future__ import annotations

import pytest

from selligent_segment.inputs.tracking._one_click import one_click_problem

FORM = "application/x-www-form-urlencoded"
MULTI = "multipart/form-data"


def _multipart(value: str, name: str = "List-Unsubscribe", boundary: str = "b0undary") -> bytes:
    return (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{name}"\r\n\r\n'
        f"{value}\r\n"
        f"--{boundary}--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (FORM, b"List-Unsubscribe=One-Click"),
        (f"{FORM}; charset=utf-8", b"List-Unsubscribe=One-Click"),
        ("Application/X-WWW-Form-Urlencoded", b"other=1&List-Unsubscribe=One-Click"),
        ("multipart/form-data; boundary=b0undary", _multipart("One-Click")),
        ('multipart/form-data; boundary="b0undary"', _multipart("One-Click")),
    ],
)
def test_both_encodings_are_accepted(content_type: str, body: bytes) -> None:
    assert one_click_problem(content_type, body) is None


@pytest.mark.parametrize(
    ("content_type", "body", "field"),
    [
        (FORM, b"List-Unsubscribe=Two-Clicks", "List-Unsubscribe"),
        (FORM, b"", "List-Unsubscribe"),
        (FORM, b"\xff\xfe", "body"),
        ("multipart/form-data; boundary=b0undary", _multipart("Nope"), "List-Unsubscribe"),
        (
            "multipart/form-data; boundary=b0undary",
            _multipart("One-Click", "x"),
            "List-Unsubscribe",
        ),
        ("multipart/form-data; boundary=other", _multipart("One-Click"), "body"),
        ("multipart/form-data", b"garbage", "body"),
        ("text/plain", b"List-Unsubscribe=One-Click", "Content-Type"),
        (None, b"List-Unsubscribe=One-Click", "Content-Type"),
    ],
)
def test_anything_else_names_what_is_wrong(
    content_type: str | None, body: bytes, field: str
) -> None:
    problem = one_click_problem(content_type, body)
    assert problem is not None
    assert problem.startswith(f"{field}: expected List-Unsubscribe=One-Click")


@pytest.mark.parametrize(
    "body",
    [
        _multipart("One-Click").replace(b"\r\n", b"\n"),
        b"preamble\r\n" + _multipart("One-Click"),
        _multipart("x", "other").removesuffix(b"--b0undary--\r\n") + _multipart("One-Click"),
        _multipart("One-Click").replace(
            b"\r\n\r\nOne-Click", b"\r\nContent-Transfer-Encoding: base64\r\n\r\nT25lLUNsaWNr"
        ),
        _multipart("One-Click").replace(
            b"\r\n\r\nOne-Click",
            b"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nOne=2DClick",
        ),
    ],
    ids=["lf", "preamble", "second-field", "base64", "quoted-printable"],
)
def test_multipart_bodies_as_senders_write_them_are_read(body: bytes) -> None:
    assert one_click_problem("multipart/form-data; boundary=b0undary", body) is None


def test_a_crafted_multipart_request_is_refused_in_one_pass() -> None:
    """A general MIME parser took hundreds of milliseconds, on the event loop, over a
    long Content-Type of parameters or a body of nested multiparts: a few such requests a
    second stalled every pixel and click. One pass now; the outcome is the same."""
    long_type = "multipart/form-data; boundary=b0undary" + "; a=b" * 2000
    problem = one_click_problem(long_type, _multipart("One-Click"))
    assert problem is not None
    assert problem.startswith("Content-Type: longer than 1024 characters")
    nested = b"".join(
        b"--B%d\r\nContent-Type: multipart/mixed; boundary=B%d\r\n\r\n" % (i, i + 1)
        for i in range(400)
    )[:16384]
    problem = one_click_problem("multipart/form-data; boundary=B0", nested)
    assert problem is not None
    assert problem.startswith("List-Unsubscribe: ")
    many = b"".join(_multipart("x", "f").removesuffix(b"--b0undary--\r\n") for _ in range(300))
    assert one_click_problem(f"{MULTI}; boundary=b0undary", many + _multipart("One-Click")) is None
