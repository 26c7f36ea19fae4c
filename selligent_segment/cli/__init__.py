"""The ``selligent-segment`` command: one module per group of commands, the shared
options and exit statuses in ``_base``, reading input files in ``_reader``."""

from selligent_segment.cli._main import main

__all__ = ["main"]
