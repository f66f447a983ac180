#!/usr/bin/env python3
"""FlashOCC Ascend porting kit: `python3 tools/kit.py --help` lists the commands.

Needs only the Python standard library and git; commands that need the training stack run it
from the environment `setup` creates.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flashocc_kit.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
