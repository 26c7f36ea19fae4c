"""``undo_transfer_encoding``: base64 and quoted-printable undone, anything else kept,
None for what does not decode."""

from __future__ import annotations

import pytest

from selligent_segment.inputs._transfer_encoding import undo_transfer_encoding


@pytest.mark.parametrize(
    ("data", "encoding", "expected"),
    [
        (b"aGVsbG8gd29ybGQ=", "base64", b"hello world"),
        (b"aGVsbG8gd29y\r\nbGQ=\r\n", " Base64 ", b"hello world"),
        (b"caf=C3=A9 =\r\nnoir", "quoted-printable", "café noir".encode()),
        (b"caf=C3=A9", "QUOTED-PRINTABLE", "café".encode()),
        (b"plain =41", "7bit", b"plain =41"),
        (b"plain", None, b"plain"),
        (b"plain", "x-unknown", b"plain"),
        (b"aGVsbG8", "base64", None),  # incorrect padding
    ],
)
def test_base64_and_quoted_printable_are_undone_and_the_rest_kept(
    data: bytes, encoding: str | None, expected: bytes | None
) -> None:
    assert undo_transfer_encoding(data, encoding) == expected


def test_another_encoding_gives_the_very_bytes_back() -> None:
    data = b"kept as it is"
    assert undo_transfer_encoding(data, "8bit") is data
