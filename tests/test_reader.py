"""Tests of the input reader: JSON Lines and CSV, line numbers, raw text, header checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selligent_segment import CallbackRecord
from selligent_segment.cli._reader import Format, HeaderError, Input, Line, format_for, read_records

ROOT = Path(__file__).resolve().parent.parent


def lines_of(path: Path, fmt: Format | None = None) -> list[Line]:
    return list(read_records(str(path), fmt))


def write_bytes(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def errors(lines: list[Line]) -> list[tuple[int, str]]:
    return [(line.number, str(line.error)) for line in lines if line.error is not None]


@pytest.mark.parametrize(
    ("path", "explicit", "expected"),
    [
        ("a.csv", None, Format.CSV),
        ("A.CSV", None, Format.CSV),
        ("a.jsonl", None, Format.JSONL),
        ("a.ndjson", None, Format.JSONL),
        ("a.json", None, Format.JSONL),
        ("a.txt", None, Format.JSONL),
        ("noext", None, Format.JSONL),
        ("-", None, Format.JSONL),
        ("-", Format.CSV, Format.CSV),
        ("a.csv", Format.JSONL, Format.JSONL),
        ("dir.csv/a.jsonl", None, Format.JSONL),
    ],
)
def test_format_by_name_or_option(path: str, explicit: Format | None, expected: Format) -> None:
    assert format_for(path, explicit) is expected


def test_jsonl_raw_is_the_untouched_line_and_numbers_count_blank_lines(tmp_path: Path) -> None:
    content = b'\n{"type": "open", "user_id": "u"}\r\n  \n{"type": "nope", "user_id": "u"}'
    lines = lines_of(write_bytes(tmp_path, "a.jsonl", content))
    assert [line.number for line in lines] == [2, 4]
    assert lines[0].raw == b'{"type": "open", "user_id": "u"}\r\n'
    assert lines[0].record == CallbackRecord("opened", user_id="u")
    assert lines[1].raw == b'{"type": "nope", "user_id": "u"}'  # no line end at EOF
    assert lines[1].error is not None
    assert lines[1].error.field == "type"
    assert lines[1].where == f"{tmp_path / 'a.jsonl'}:4"


def test_jsonl_byte_order_mark_and_bad_utf8(tmp_path: Path) -> None:
    content = b'\xef\xbb\xbf{"type": "open", "user_id": "u"}\n{"type": "open", "user_id": "\xff"}\n'
    lines = lines_of(write_bytes(tmp_path, "a.jsonl", content))
    assert lines[0].record is not None
    assert lines[1].error is not None
    assert str(lines[1].error) == "line: not valid UTF-8 (byte 0xFF at column 30)"


CSV_HEADER = b"type,tenant,email,user_id,event_id,timestamp,smtp_status,properties\n"


def test_csv_rows_become_the_same_records_as_json(tmp_path: Path) -> None:
    content = CSV_HEADER + (
        b"bounce,acme,Ada@Example.com,,e1,2026-11-20T10:01:00Z,550,"
        b'"{""mta"": ""mx-3"", ""attempt"": 2, ""tags"": [""a"", 1.5, true, null]}"\n'
        b"open,,,42,,,,\n"
    )
    lines = lines_of(write_bytes(tmp_path, "a.csv", content))
    assert errors(lines) == []
    assert lines[0].record == CallbackRecord.from_dict(
        {
            "type": "bounced",
            "tenant": "acme",
            "email": "Ada@Example.com",
            "event_id": "e1",
            "timestamp": "2026-11-20T10:01:00Z",
            "smtp_status": 550,  # an integer in JSON, text in CSV: the same record
            "properties": {"mta": "mx-3", "attempt": 2, "tags": ["a", 1.5, True, None]},
        }
    )
    assert lines[1].record == CallbackRecord("opened", user_id="42")
    assert [line.number for line in lines] == [2, 3]


def test_csv_leading_zeros_and_spaces_in_text_are_kept_as_text(tmp_path: Path) -> None:
    content = b"type,user_id,event_id\nopen,00123,  007 \n"
    (line,) = lines_of(write_bytes(tmp_path, "a.csv", content))
    assert line.record is not None
    assert line.record.user_id == "00123"
    assert line.record.event_id == "007"


def test_csv_multiline_cells_blank_rows_bom_and_crlf(tmp_path: Path) -> None:
    content = (
        b"\xef\xbb\xbftype,user_id,email_subject\r\n"
        b"\r\n"
        b'open,u1,"two\r\nlines"\r\n'
        b",,\r\n"
        b"open,u2,plain\r\n"
        b'open,u3,"three\nphysical\nlines"\n'
        b"nope,u4,x"
    )
    path = write_bytes(tmp_path, "a.csv", content)
    lines = lines_of(path)
    assert [line.number for line in lines] == [3, 6, 7, 10]
    assert lines[0].raw == b'open,u1,"two\r\nlines"\r\n'
    assert lines[0].record is not None
    assert lines[0].record.email_subject == "two\r\nlines"
    assert lines[2].raw == b'open,u3,"three\nphysical\nlines"\n'
    assert errors(lines) == [
        (
            10,
            "type: unknown event type 'nope' (expected one of delivered, opened, "
            "link_clicked, unsubscribed, bounced, marked_as_spam)",
        )
    ]
    source = Input(str(path), Format.CSV).open()
    assert source.columns == ("type", "user_id", "email_subject")
    assert source.header == b"\xef\xbb\xbftype,user_id,email_subject\r\n"
    assert source.size == len(content)
    list(source)
    assert source.bytes_read == len(content)


def test_csv_row_errors_name_the_line_and_field(tmp_path: Path) -> None:
    content = CSV_HEADER + (
        b"open,acme,a@b.co,,,,,\n"
        b"open,acme,a@b.co,,,\n"  # too few cells
        b"open,acme,a@b.co,,,,,,\n"  # too many
        b"open,acme,a@b.co,,,,,{not json}\n"
        b'open,acme,a@b.co,,,,,"[1, 2]"\n'
        b"open,acme,a@b.co,,,,,\xff\n"
        b"open,acme,not-an-address,,,,,\n"
        b"open,acme,,,,,,\n"
        b"open,acme,a@b.co,,,yesterday,,\n"
        b'open,acme,a@b.co,,,,,"{""FeedbackLoop"": 1}"\n'
    )
    lines = lines_of(write_bytes(tmp_path, "a.csv", content))
    found = errors(lines)
    assert found[0] == (3, "record: 6 cells, but the header has 8 columns")
    assert found[1] == (4, "record: 9 cells, but the header has 8 columns")
    assert found[2][0] == 5
    assert found[2][1].startswith("properties: invalid JSON (")
    assert found[3:] == [
        (6, "properties: expected an object, got list"),
        (7, "line: not valid UTF-8"),
        (8, "email: not a plausible email address"),
        (9, "email: a record needs an email or a user_id (neither was given)"),
        (10, "timestamp: not an ISO-8601 date-time: 'yesterday'"),
        (11, "properties: property name 'FeedbackLoop' is not snake_case"),
    ]
    assert lines[0].record is not None


def test_csv_an_oversized_cell_is_one_bad_row_and_reading_goes_on(tmp_path: Path) -> None:
    huge = b"x" * 200_000
    content = b"type,user_id,email_subject\nopen,u1," + huge + b"\nopen,u2,ok\n"
    lines = lines_of(write_bytes(tmp_path, "a.csv", content))
    assert lines[0].error is not None
    assert str(lines[0].error) == (
        "email_subject: a cell over 131072 characters, the longest a CSV cell may be"
    )
    assert lines[0].number == 2
    assert lines[1].record == CallbackRecord("opened", user_id="u2", email_subject="ok")
    assert lines[1].number == 3


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"type,email,colour\n", "colour: unknown column (record fields: "),
        (b"type,email,email\n", "email: duplicate column"),
        (b"type,email,\n", "column 3: has no name"),
        (b"email,user_id\n", "type: no such column; every record needs a type"),
        (b"type,tenant\n", "email: the header has neither an email nor a user_id column"),
        (b"type,\xff\n", "header: not valid UTF-8"),
    ],
)
def test_csv_header_problems_refuse_the_whole_file_at_open(
    tmp_path: Path, header: bytes, message: str
) -> None:
    path = write_bytes(tmp_path, "a.csv", header + b"open,a@b.co,x\n")
    with pytest.raises(HeaderError) as info:
        Input(str(path), Format.CSV).open()
    assert str(info.value).startswith(f"{path}:1: {message}")


def test_csv_header_names_are_trimmed(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "a.csv", b" type , user_id \nopen,u\n")
    (line,) = lines_of(path)
    assert line.record == CallbackRecord("opened", user_id="u")


def test_empty_inputs_have_no_records(tmp_path: Path) -> None:
    assert lines_of(write_bytes(tmp_path, "a.csv", b"")) == []
    assert lines_of(write_bytes(tmp_path, "b.csv", b"\n\n")) == []
    assert lines_of(write_bytes(tmp_path, "c.csv", b"type,email\n")) == []
    assert lines_of(write_bytes(tmp_path, "d.jsonl", b"")) == []


def test_the_example_csv_holds_the_example_jsonl_records() -> None:
    csv_lines = lines_of(ROOT / "examples" / "callbacks.csv")
    json_records = [
        CallbackRecord.from_dict(json.loads(raw))
        for raw in (ROOT / "examples" / "callbacks.jsonl").read_text().splitlines()
    ]
    assert errors(csv_lines) == []
    assert [line.record for line in csv_lines] == json_records


def test_open_fails_for_missing_files_and_directories(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Input(str(tmp_path / "nope.jsonl"), Format.JSONL).open()
    with pytest.raises(IsADirectoryError):
        Input(str(tmp_path), Format.JSONL).open()


# --- strict CSV quoting: a broken quote refuses its line, never the rows after it -------------


def covered_lines(lines: list[Line]) -> list[int]:
    """The physical line numbers each yielded line (record or error) stands for."""
    return [n for line in lines for n in range(line.number, line.number + line.raw.count(b"\n"))]


def test_csv_unclosed_quote_is_refused_with_its_line_and_the_rows_after_it_are_read(
    tmp_path: Path,
) -> None:
    rows = b"".join(b"open,u%d,subject %d\n" % (i, i) for i in range(3, 53))
    content = b'type,user_id,email_subject\nopen,u2,"never closed\n' + rows
    path = write_bytes(tmp_path, "a.csv", content)
    lines = lines_of(path)
    assert errors(lines) == [
        (
            2,
            "email_subject: unclosed quote (the quoted cell that starts on this line never "
            "ends); the next lines are read as rows of their own",
        )
    ]
    assert lines[0].raw == b'open,u2,"never closed\n'
    assert [line.record.user_id for line in lines[1:] if line.record] == [
        f"u{i}" for i in range(3, 53)
    ]
    assert [line.number for line in lines[1:]] == list(range(3, 53))
    assert covered_lines(lines) == list(range(2, 53))  # every line once, none lost
    assert b"type,user_id,email_subject\n" + b"".join(line.raw for line in lines) == content
    source = Input(str(path), Format.CSV).open()
    list(source)
    assert source.bytes_read == len(content)  # lines read again are not counted twice


def test_csv_unclosed_quote_ended_by_a_later_quoted_cell_keeps_that_row(tmp_path: Path) -> None:
    content = (
        b"type,user_id,email_subject,properties\n"
        b'open,u1,"broken,\n'
        b"open,u2,plain,\n"
        b'open,u3,x,"{""attempt"": 2}"\n'
        b"open,u4,y,\n"
    )
    path = write_bytes(tmp_path, "a.csv", content)
    lines = lines_of(path)
    assert errors(lines) == [
        (
            2,
            f"email_subject: unclosed quote, or text after the closing quote on line 4 of {path}; "
            "the next lines are read as rows of their own",
        )
    ]
    assert [(line.number, line.record.user_id) for line in lines if line.record] == [
        (3, "u2"),
        (4, "u3"),
        (5, "u4"),
    ]
    assert lines[2].record is not None
    assert lines[2].record.properties == {"attempt": 2}


def test_csv_text_after_a_closing_quote_is_refused_with_file_and_line(tmp_path: Path) -> None:
    content = b'type,user_id,email_subject\nopen,u1,"x"y\nopen,u2,"ok"\n'
    path = write_bytes(tmp_path, "a.csv", content)
    lines = lines_of(path)
    assert errors(lines) == [
        (
            2,
            "email_subject: text after the closing quote of a quoted cell; quote the whole "
            "cell and double the quotes inside it",
        )
    ]
    assert lines[0].where == f"{path}:2"
    assert lines[1].record == CallbackRecord("opened", user_id="u2", email_subject="ok")


def test_csv_an_oversized_quoted_cell_on_one_line_names_its_column(tmp_path: Path) -> None:
    """The quotes are fine, only a cell's length is not: its column is named (it was
    reported as field ``line``). The quotes doubled inside a cell count once, as read:
    email_subject's 140,000 characters in the file are 70,000 once read, under the
    limit; the properties cell is the one over it."""
    subject = b'"' + b'""' * 70_000 + b'"'
    content = (
        b"type,user_id,email_subject,properties\nopen,u1,"
        + subject
        + b',"'
        + b"x" * 140_000
        + b'"\nopen,u2,ok,\n'
    )
    lines = lines_of(write_bytes(tmp_path, "a.csv", content))
    assert errors(lines) == [
        (2, "properties: a cell over 131072 characters, the longest a CSV cell may be")
    ]
    assert lines[1].record == CallbackRecord("opened", user_id="u2", email_subject="ok")


@pytest.mark.parametrize(
    ("row", "error"),
    [
        pytest.param(
            b'open,u1,"' + b"x" * 131_072 + b'",',
            "email_subject: longer than 8192 characters (131072)",  # read, then checked
            id="exactly the limit: a cell may hold 131,072 characters",
        ),
        pytest.param(
            b'open,u1,"' + b"x" * 131_072 + b'","a"b',
            "properties: text after the closing quote of a quoted cell; quote the whole cell "
            "and double the quotes inside it",
            id="exactly the limit, then another error: that one is reported",
        ),
        pytest.param(
            b"open,u1,ok,{}," + b"x" * 131_073,
            "record: cell 5 is over 131072 characters (and the header has 4 columns)",
            id="a long cell past the header's columns",
        ),
        pytest.param(
            b'open,u1,"' + b"x" * 131_077 + b'\nmore",',
            "email_subject: unclosed quote, or a quoted cell over 131072 characters; the next "
            "lines are read as rows of their own",
            id="an unclosed quote whose first line is already over the limit",
        ),
        pytest.param(
            b"open,u1,a\r" + b"x" * 131_073 + b",",
            "line: not valid CSV (new-line character seen in unquoted field",  # + csv's advice
            id="a stray carriage return ends the row, as csv reads it",
        ),
    ],
)
def test_csv_the_cell_limit_is_reported_as_csv_reads_it(
    tmp_path: Path, row: bytes, error: str
) -> None:
    """Found by a review of the column-naming change: the boundary, and the three lines
    where a too-long cell is not the first thing csv finds wrong."""
    content = b"type,user_id,email_subject,properties\n" + row + b"\nopen,u2,ok,\n"
    lines = lines_of(write_bytes(tmp_path, "a.csv", content))
    [(number, text), *_] = errors(lines)
    assert number == 2
    assert text.startswith(error)  # whole, but for csv's own message (it varies by version)
    assert lines[-1].record == CallbackRecord("opened", user_id="u2", email_subject="ok")


def test_csv_unclosed_quote_over_the_cell_limit_still_reads_the_rows_it_swallowed(
    tmp_path: Path,
) -> None:
    filler = b"".join(b"open,u%d,%s\n" % (i, b"x" * 1000) for i in range(3, 203))  # 200 KB
    content = b'type,user_id,email_subject\nopen,u2,"oops\n' + filler + b"open,u203,last\n"
    lines = lines_of(write_bytes(tmp_path, "a.csv", content))
    assert errors(lines) == [
        (
            2,
            "email_subject: unclosed quote, or a quoted cell over 131072 characters; "
            "the next lines are read as rows of their own",
        )
    ]
    assert [line.number for line in lines if line.record] == list(range(3, 204))
    assert covered_lines(lines) == list(range(2, 204))


_CSV_PIECES = [
    "open,u,ok",
    'open,u,"quoted"',
    'open,u,"two',
    'lines"',
    'open,u,"x"y',
    'open,u,"',
    '"',
    'open,u,"a ""b"" c"',
    "",
    ",,",
    'open,"u',
    'x"',
]


@given(st.lists(st.sampled_from(_CSV_PIECES), max_size=30))
@settings(max_examples=300, deadline=None)
def test_every_csv_line_is_read_once_as_a_record_or_an_error(pieces: list[str]) -> None:
    content = b"type,user_id,email_subject\n" + "".join(p + "\n" for p in pieces).encode()
    fd, name = tempfile.mkstemp(suffix=".csv")
    try:
        os.write(fd, content)
        os.close(fd)
        lines = lines_of(Path(name))
    finally:
        os.unlink(name)
    covered = covered_lines(lines)
    assert covered == sorted(set(covered))  # in file order, none twice
    # A line no record or error stands for holds nothing but blanks, commas and quotes
    # (a blank row, skipped).
    missing = set(range(2, len(pieces) + 2)) - set(covered)
    assert [pieces[n - 2] for n in sorted(missing) if pieces[n - 2].strip(' ,"')] == []


# --- JSON: duplicate keys, over-long numbers ---------------------------------------------------


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (b'{"type": "open", "email": "a@b.co", "email": "x@y.zz"}', "email"),
        (b'{"type":"open","user_id":"u","user_id":"v"}', "user_id"),
        (b'{"type": "open", "user_id": "u", "type" : "click"}', "type"),
        (b'{"type": "open", "user_id" : "u", "user_id" : "v"}', "user_id"),
        (
            b'{"type": "open", "user_id": "u", "properties": {"a": {"b": 1, "b": 2}}}',
            "properties.a.b",
        ),
        (
            b'{"type": "open", "user_id": "u", "properties": {"a": [{"c": 1, "c": 1}]}}',
            "properties.a[0].c",
        ),
        (b'{"type": "open", "user_id": "u", "us\\u0065r_id": "v"}', "user_id"),
    ],
)
def test_jsonl_duplicate_keys_are_refused_naming_the_key(
    tmp_path: Path, line: bytes, field: str
) -> None:
    (found,) = lines_of(write_bytes(tmp_path, "a.jsonl", line + b"\n"))
    assert found.error is not None
    assert found.error.field == field
    assert str(found.error) == f"{field}: duplicate key (the object gives it more than once)"


@pytest.mark.parametrize(
    "line",
    [
        b'{"type": "open", "user_id": "u", "email_subject": "say \\": twice \\": here"}',
        b'{"type" : "open" , "user_id" : "u"}',
        b'{"type": "open", "user_id": "u", "properties": {"a": {"b": 1}, "c": [{"b": 2}]}}',
    ],
)
def test_jsonl_lines_that_only_look_like_duplicates_are_records(
    tmp_path: Path, line: bytes
) -> None:
    (found,) = lines_of(write_bytes(tmp_path, "a.jsonl", line + b"\n"))
    assert found.error is None
    assert found.record is not None


def test_csv_properties_cell_with_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    content = b'type,user_id,properties\nopen,u1,"{""n"": 1, ""n"": 2}"\n'
    (line,) = lines_of(write_bytes(tmp_path, "a.csv", content))
    assert (line.number, str(line.error)) == (
        2,
        "properties.n: duplicate key (the object gives it more than once)",
    )


@pytest.mark.parametrize("digits", [21, 25, 400, 5000])
def test_jsonl_integer_id_too_long_is_refused_naming_the_field(tmp_path: Path, digits: int) -> None:
    line = b'{"type": "open", "user_id": ' + b"9" * digits + b"}\n"
    (found,) = lines_of(write_bytes(tmp_path, "a.jsonl", line))
    assert found.error is not None
    assert found.error.field == "user_id"
    assert found.error.reason.startswith("integer too large to read exactly: integer ids in JSON")
    assert "give a longer id as text" in found.error.reason


def test_jsonl_integer_ids_within_64_bits_are_kept_exactly(tmp_path: Path) -> None:
    line = b'{"type": "open", "user_id": 18446744073709551615, "event_id": -9223372036854775808}\n'
    (found,) = lines_of(write_bytes(tmp_path, "a.jsonl", line))
    assert found.record is not None
    assert (found.record.user_id, found.record.event_id) == (
        "18446744073709551615",
        "-9223372036854775808",
    )


def test_unknown_csv_column_name_is_shown_escaped_and_short(tmp_path: Path) -> None:
    name = "\x1b[2J" + "c" * 100_000
    path = write_bytes(tmp_path, "a.csv", b"type,email," + name.encode() + b"\n")
    with pytest.raises(HeaderError) as info:
        Input(str(path), Format.CSV).open()
    text = str(info.value)
    assert "\x1b" not in text
    assert "\\x1b[2J" in text
    assert "(100,004 characters)" in text
    assert len(text) < len(str(path)) + 450  # the name cut short, the known fields listed


def test_send_dry_run_reports_an_unclosed_quote_and_still_prints_the_rows_after_it(
    tmp_path: Path,
) -> None:
    rows = b"".join(b"open,u%d,subject %d\n" % (i, i) for i in range(3, 53))
    path = write_bytes(tmp_path, "a.csv", b'type,user_id,email_subject\nopen,u2,"oops\n' + rows)
    result = subprocess.run(
        [sys.executable, "-m", "selligent_segment", "send", "--dry-run", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 50
    assert f"{path}:2: email_subject: unclosed quote (" in result.stderr
    assert "read 51 records from 1 input: 50 valid, 1 invalid" in result.stderr


@pytest.mark.parametrize("fmt", [Format.JSONL, Format.CSV])
def test_a_pipe_is_read_once_every_record_with_its_line(tmp_path: Path, fmt: Format) -> None:
    """A FIFO or ``<(zcat x.gz)``: the check at open read (and lost) the first buffer
    before the records were read from a second open: the CSV header and every row went,
    or the first JSON lines, and the line numbers were off."""
    count = 3000  # well over one read buffer
    if fmt is Format.CSV:
        content = b"type,user_id\n" + b"".join(b"open,u%d\n" % i for i in range(count))
    else:
        content = b"".join(b'{"type": "open", "user_id": "u%d"}\n' % i for i in range(count))
    path = tmp_path / "pipe"
    os.mkfifo(path)
    writer = subprocess.Popen(
        [sys.executable, "-c", f"open({str(path)!r}, 'wb').write({content!r})"]
    )
    try:
        lines = list(Input(str(path), fmt).open())
    finally:
        assert writer.wait(30) == 0  # not killed by SIGPIPE: everything was read
    assert errors(lines) == []
    assert [line.record.user_id for line in lines if line.record] == [f"u{i}" for i in range(count)]
    first = 2 if fmt is Format.CSV else 1
    assert [line.number for line in lines] == list(range(first, first + count))


def test_a_header_error_names_the_headers_own_line(tmp_path: Path) -> None:
    """Blank lines may come before the header: its error said line 1 all the same."""
    path = write_bytes(tmp_path, "a.csv", b"\n \r\n\ntype,emial\nopen,a@b.co\n")
    with pytest.raises(HeaderError) as info:
        Input(str(path), Format.CSV).open()
    assert str(info.value).startswith(f"{path}:4: emial: unknown column")
    assert info.value.line == 4


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (
            b'{"type": "open", "user_id": "u1", "properties": {"big": ' + b"1" * 30 + b"}}",
            "properties.big",
        ),
        (
            b'{"type": "open", "user_id": "u1", "properties": {"l": [1, ' + b"9" * 20 + b"]}}",
            "properties.l[1]",
        ),
        (b'{"type": "open", "user_id": "u1", "context": {"n": -' + b"9" * 19 + b"}}", "context.n"),
    ],
)
def test_jsonl_nested_integer_beyond_64_bits_is_refused_naming_its_path(
    tmp_path: Path, line: bytes, field: str
) -> None:
    """Found by a review: an integer beyond 64 bits inside ``properties`` (an order
    number of 30 digits) was read as a float and sent changed (1.2345678901234568e+29),
    without a word. Refused now, naming where, as the id fields are."""
    (found,) = lines_of(write_bytes(tmp_path, "a.jsonl", line + b"\n"))
    assert found.error is not None
    assert found.error.field == field
    assert found.error.reason.startswith("integer too large to read exactly")


def test_jsonl_long_digits_within_64_bits_or_in_text_are_kept(tmp_path: Path) -> None:
    line = (
        b'{"type": "open", "user_id": "u1", "properties": {"max": 18446744073709551615, '
        b'"min": -9223372036854775808, "phone": "1234567890123456789012", "x": 1.5e300}}\n'
    )
    (found,) = lines_of(write_bytes(tmp_path, "a.jsonl", line))
    assert found.record is not None, found.error
    properties = found.record.to_dict()["properties"]
    assert properties["max"] == 18446744073709551615
    assert properties["min"] == -9223372036854775808
    assert properties["phone"] == "1234567890123456789012"


def test_a_csv_properties_cell_with_an_integer_beyond_64_bits_is_refused(tmp_path: Path) -> None:
    content = b'type,user_id,properties\nopen,u1,"{""order"": ' + b"7" * 25 + b'}"\n'
    (line,) = lines_of(write_bytes(tmp_path, "a.csv", content))
    assert line.error is not None
    assert line.error.field == "properties.order"


def test_a_jsonl_line_not_in_utf_8_says_so_naming_the_byte(tmp_path: Path) -> None:
    """Found by a review: a Latin-1 line was refused as "invalid JSON (str is not valid
    UTF-8: surrogates not allowed: line 1 column 1 (char 0))", a misleading reason and
    place; CSV says the line is not UTF-8."""
    line = b'{"type":"open","email":"a@example.com","email_subject":"caf\xe9"}\n'
    (found,) = lines_of(write_bytes(tmp_path, "a.jsonl", line))
    assert found.error is not None
    assert found.error.field == "line"
    assert found.error.reason == "not valid UTF-8 (byte 0xE9 at column 60)"
