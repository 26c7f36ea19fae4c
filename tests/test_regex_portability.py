"""Every regular expression of the package compiles on Python 3.10, the oldest the package
declares: no possessive quantifier (``a++``) and no atomic group (``(?>…)``), which Python
3.11 added (found by a review: a possessive quantifier made the package fail to import on
3.10). The suite runs on 3.11 only, so this reads the patterns rather than compiling them
on 3.10."""

from __future__ import annotations

import importlib
import pkgutil
import re

import selligent_segment

#: A quantifier followed by ``+`` (possessive), or ``(?>`` (atomic), outside an escape.
_NEWER_SYNTAX = re.compile(r"(?<!\\)(?:[*+?}]\+|\(\?>)")
#: A character class (its escapes included): read as one character.
_CLASS = re.compile(r"\[\^?\]?(?:\\.|[^\]\\])*\]")


def _newer(pattern: str) -> bool:
    return _NEWER_SYNTAX.search(_CLASS.sub("x", pattern)) is not None


def _patterns() -> list[tuple[str, str, str]]:
    found = []
    for module in pkgutil.walk_packages(selligent_segment.__path__, "selligent_segment."):
        if module.name.endswith("__main__") or module.name.endswith("_plugin"):
            continue
        loaded = importlib.import_module(module.name)
        for name, value in vars(loaded).items():
            if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
                found.append((module.name, name, value.pattern))
    return found


def test_no_pattern_uses_syntax_python_3_10_lacks() -> None:
    patterns = _patterns()
    assert len(patterns) > 20  # the package's patterns were found
    newer = [(m, n) for m, n, p in patterns if _newer(p)]
    assert newer == []


def test_the_check_sees_possessive_and_atomic_syntax() -> None:
    for pattern in (r"a++b", r"(?>ab)c", r"[x]*+", r"a{2}+", r"[^\]a]++"):
        assert _newer(pattern), pattern
    for pattern in (r"a+b", r"\++", r"[+]+", r"a{2}", r"-?[0-9]+", r"[^\s\]+]+@"):
        assert not _newer(pattern), pattern
