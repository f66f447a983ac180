#!/usr/bin/env bash
# CPU smoke run: two CPU processes over gloo train the reduced config on the synthetic set, then mIoU and pictures.
# Run from the patched FlashOCC root: bash test/train_smoke_flashocc_cpu.sh [options]; options and outputs are in the
# kit's README ("Launch scripts"), or: python3 ../tools/kit.py launch --help
exec bash "$(dirname "$(readlink -f "$0")")/kit_launch.sh" smoke "$@"
