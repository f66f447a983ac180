#!/usr/bin/env bash
# FlashOCC-R50 on 8 devices, the seed's interface: --epochs=N runs N epochs for performance; no argument runs the full accuracy run (24 epochs, then mIoU).
# Run from the patched FlashOCC root: bash test/train_8p_flashocc_r50.sh [options]; options and outputs are in the
# kit's README ("Launch scripts"), or: python3 ../tools/kit.py launch --help
exec bash "$(dirname "$(readlink -f "$0")")/kit_launch.sh" seed "$@"
