#!/usr/bin/env bash
# A newcomer's first command: set everything up, then train and evaluate FlashOCC on CPU on a
# generated Occ3D-nuScenes-format set, and say where the results and pictures are.
#   bash tools/quickstart.sh        (about 20 minutes on 2 cores the first time)
set -euo pipefail
kit=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
python3 "$kit/tools/kit.py" setup
cd "$kit/FlashOCC"
bash test/train_smoke_flashocc_cpu.sh "$@"
