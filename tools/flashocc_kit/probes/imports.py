"""Whether each module named on the command line imports here, and the last line of the error if not.

Usage: python -m flashocc_kit.probes.imports MODULE...
"""

import importlib
import json
import sys

result = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        result[name] = None
    except Exception as exc:  # noqa: BLE001 (a missing shared library is an OSError, a bad build anything)
        result[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
print(json.dumps(result))
