"""``python -m portolan.cli``: kept working for existing ``shardCommand``/``operator.command`` values.

The entry point is :mod:`portolan.launching` (``python -m portolan``); this only
hands over to it (an import the layer contract allows explicitly).
"""

import sys

from portolan import launching

sys.exit(launching.main())
