"""The results side of the launch scripts: parse a run's logs, write its summaries, gate it against baselines.

logparse: training records and mIoU from mmcv's logs and the console; summary: the ModelZoo log, the JSON summary
and the curves PNG (`summarize_run`, `kit.py summarize`); gate: the regression gate (`kit.py gate`); plot: the PNG
(the only module needing a third-party library, matplotlib, imported when used).
"""
