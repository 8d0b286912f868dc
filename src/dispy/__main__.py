"""``python -m dispy``: the ``dispy`` command."""

import sys

from .cli.main import main

sys.exit(main())
