"""``python -m portolan``: the same entry point as the ``portolan`` command."""

import sys

from portolan import launching

sys.exit(launching.main())
