"""The ``selligent-segment`` command line.

One module per command (``_send``, ``_flush``, ``_status`` for ``spool status``,
``_dead_letters``, ``_demo``); the registry, the parser and :func:`main` in ``_main``; what
they share (``Command``, exit statuses, options) in ``_base``; the summaries and exit
statuses as pure functions in ``_summary``; input files in ``_reader``, the ``--rejects``
file in ``_rejects``, the progress bar in ``_progress``.
"""

from selligent_segment.cli._main import main

__all__ = ["main"]
