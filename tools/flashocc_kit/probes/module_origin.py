"""Where a module would be imported from (null when it is not importable).

Usage: python -m flashocc_kit.probes.module_origin MODULE
"""

import importlib.util
import json
import sys

spec = importlib.util.find_spec(sys.argv[1])
print(json.dumps({"origin": spec.origin if spec else None}))
