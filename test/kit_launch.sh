#!/usr/bin/env bash
# Shared by the launch scripts: find the kit, then hand everything to `kit.py launch`
# (all logic, and every option, lives in tools/flashocc_kit/commands/launch.py and training/).
set -euo pipefail
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
kit=${FLASHOCC_KIT_ROOT:-$here/..}
if [ ! -f "$kit/tools/kit.py" ]; then
  kit=..  # test/ copied into FlashOCC by hand (the seed's layout): the kit is FlashOCC's parent
fi
if [ ! -f "$kit/tools/kit.py" ]; then
  echo "error: cannot find the kit's tools/kit.py; set FLASHOCC_KIT_ROOT to the kit's directory" >&2
  exit 2
fi
exec python3 "$kit/tools/kit.py" launch "$@"
