"""Which lock lines apply to this interpreter: their PEP 508 markers evaluated here.

Usage: python -m flashocc_kit.probes.applicable 'NAME==VERSION[ ; MARKER]'...
Prints the `NAME==VERSION` of the lines that apply, in order.
"""

import json
import sys

try:
    from packaging.markers import Marker
except ImportError:  # a fresh venv has no packaging yet; every pip vendors it
    from pip._vendor.packaging.markers import Marker

applicable = []
for line in sys.argv[1:]:
    pin, _, marker = line.partition(";")
    if not marker.strip() or Marker(marker.strip()).evaluate():
        applicable.append(pin.strip())
print(json.dumps(applicable))
