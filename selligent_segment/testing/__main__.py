"""``python -m selligent_segment.testing``: a LocalSegment in its own process."""

import sys

from selligent_segment.testing import main

sys.exit(main())
