"""Tests of the input reader: JSON Lines and CSV, line numbers, raw text, header checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selligent_segment import CallbackRecord
from selligent_segment._reader import Format, HeaderError, Input, Line, format_for, read_records

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
    assert str(lines[1].error).startswith("line: invalid JSON (")


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
    assert str(lines[0].error).startswith("line: not valid CSV (field larger than field limit")
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
