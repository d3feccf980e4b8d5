"""``python -m antler.node NODE_ID`` is the standalone node: it serves its parent on stdin and stdout."""

import sys

from antler.node.process import main

sys.exit(main())
