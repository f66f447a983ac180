#!/usr/bin/env python3
"""FlashOCC Ascend porting kit: `python3 tools/kit.py --help` lists the commands.

Needs only the Python standard library (Python >= 3.8) and git; commands that need the training
stack run it from the environment `setup` creates.
"""

import sys

if sys.version_info < (3, 8):  # noqa: UP036 (before anything older Pythons cannot parse)
    sys.exit("error: the kit needs Python 3.8 or newer; this is Python {}.{}. Run it with python3.8 ... "
             "python3.11 (`kit.py stacks` lists what each serves).".format(*sys.version_info[:2]))

from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flashocc_kit.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
