"""``python -m selligent_segment``: the same as the ``selligent-segment`` command."""

import sys

from selligent_segment.cli import main

sys.exit(main())
