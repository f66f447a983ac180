"""Which DrivingSDK build an environment holds, read from its files: importing mx_driving needs CANN and an NPU.

Usage: python -m flashocc_kit.probes.drivingsdk_build
Prints {"origin": the mx_driving package directory or null, "vendors": the kernel directories in its
packages/vendors (customize: A2, customize_arch35: A5), "distributions": {"mx-driving": version or null,
"mx-driving-a5": version or null}} (a source build installs as mx-driving, whichever chip it was built for).
"""

import importlib.util
import json
from importlib import metadata
from pathlib import Path

spec = importlib.util.find_spec("mx_driving")  # a top-level package: found, not imported
origin = Path(spec.origin).parent if spec is not None and spec.origin else None
vendors = origin / "packages" / "vendors" if origin else None
distributions = {}
for name in ("mx-driving", "mx-driving-a5"):
    try:
        distributions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        distributions[name] = None
print(json.dumps({"origin": str(origin) if origin else None,
                  "vendors": sorted(p.name for p in vendors.iterdir() if p.is_dir()) if vendors and vendors.is_dir()
                  else [],
                  "distributions": distributions}))
