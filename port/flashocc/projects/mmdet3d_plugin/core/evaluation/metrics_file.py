# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""The metrics of one evaluation as a JSON file, written by tools/test.py next to its --out.

What the evaluation prints (count_miou's "===>" lines) is for people; this file is what the
porting kit's summaries and regression gate read. mIoU and per-class IoU are in percent, rounded
as count_miou prints them; a class absent from both prediction and ground truth is null.
"""
import json
import math

import numpy as np

SCHEMA = 1


def _number(value):
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def metrics_document(metric, eval_results, dataset):
    """A JSON-ready dict of an evaluate() result; `dataset` keeps the metric object it used."""
    document = {'schema': SCHEMA, 'metric': metric}
    counter = getattr(dataset, 'occ_eval_metrics', None)
    if metric != 'ray-iou' and counter is not None and 'mIoU' in eval_results:
        per_class = np.asarray(eval_results['mIoU'], dtype=np.float64)
        scored = counter.class_names[:counter.num_classes - 1]  # 'free' is not scored
        ious = [_number(round(v * 100, 2)) for v in per_class[:len(scored)]]
        document.update(
            miou=_number(round(np.nanmean(per_class[:len(scored)]) * 100, 2)),
            per_class_iou=dict(zip(scored, ious)),
            samples=int(counter.cnt))
    else:
        document['values'] = {
            key: (_number(value) if np.isscalar(value) else
                  [_number(v) for v in np.asarray(value).ravel()])
            for key, value in eval_results.items()}
    return document


def write_metrics(path, metric, eval_results, dataset):
    with open(path, 'w') as fh:
        json.dump(metrics_document(metric, eval_results, dataset), fh, indent=2,
                  allow_nan=False)
        fh.write('\n')
    return path
