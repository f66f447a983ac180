"""Which lines of requirements files the installed distributions do not satisfy (markers evaluated here).

Usage: python -m flashocc_kit.probes.runtime_requirements FILE...
"""

import json
import sys
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:  # every pip vendors it
    from pip._vendor.packaging.requirements import Requirement

problems = []
for path in sys.argv[1:]:
    with open(path) as fh:
        for raw in fh:
            line = raw.split("#")[0].strip()
            if not line or line.startswith("-"):
                continue
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate():
                continue
            try:
                version = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{path}: {line}: not installed")
                continue
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                problems.append(f"{path}: {line}: have {version}")
print(json.dumps(problems))
