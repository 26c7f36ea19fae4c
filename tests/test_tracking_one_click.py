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
