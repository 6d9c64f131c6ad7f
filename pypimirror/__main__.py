"""Allow ``python -m pypimirror``."""

from __future__ import annotations

import sys

from pypimirror.cli import main

sys.exit(main())
