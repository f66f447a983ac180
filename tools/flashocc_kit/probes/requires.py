"""What an installed distribution requires of another one, and whether the installed one satisfies it.

Usage: python -m flashocc_kit.probes.requires DIST NEEDED
Prints {"spec": "torch<2.6.0,>=2.1.0" or null, "installed": "2.1.0" or null, "satisfied": true/false/null}
(null: DIST states no requirement on NEEDED, so nothing can be judged).
"""

import json
import sys
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:  # a fresh venv has no packaging yet; every pip vendors it
    from pip._vendor.packaging.requirements import Requirement

dist, needed = sys.argv[1], sys.argv[2]
try:
    installed = metadata.version(needed)
except metadata.PackageNotFoundError:
    installed = None
spec = satisfied = None
for line in metadata.requires(dist) or []:
    requirement = Requirement(line)
    if requirement.name.lower().replace("_", "-") == needed.lower().replace("_", "-"):
        spec = str(requirement)
        satisfied = installed is not None and requirement.specifier.contains(installed, prereleases=True)
print(json.dumps({"spec": spec, "installed": installed, "satisfied": satisfied}))
