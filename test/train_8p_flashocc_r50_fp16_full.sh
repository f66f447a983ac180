#!/usr/bin/env bash
# FlashOCC-R50 on 8 devices with the image backbone in fp16, accuracy: 24 epochs, then mIoU.
# Run from the patched FlashOCC root: bash test/train_8p_flashocc_r50_fp16_full.sh [options]; options and outputs are in the
# kit's README ("Launch scripts"), or: python3 ../tools/kit.py launch --help
exec bash "$(dirname "$(readlink -f "$0")")/kit_launch.sh" full --precision fp16-backbone "$@"
