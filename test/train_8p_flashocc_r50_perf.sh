#!/usr/bin/env bash
# FlashOCC-R50 on 8 devices, performance: a bounded number of iterations (--max-iters, default 200).
# Run from the patched FlashOCC root: bash test/train_8p_flashocc_r50_perf.sh [options]; options and outputs are in the
# kit's README ("Launch scripts"), or: python3 ../tools/kit.py launch --help
exec bash "$(dirname "$(readlink -f "$0")")/kit_launch.sh" perf "$@"
