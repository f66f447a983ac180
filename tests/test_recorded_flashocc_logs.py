"""The results parser on a real FlashOCC run of the kit, recorded on CPU (tests/data/recorded/flashocc_smoke_cpu)."""

from __future__ import annotations

import json

from conftest import KIT_ROOT
from flashocc_kit.results.logparse import find_logs, parse_eval, parse_train
from flashocc_kit.results.summary import CaseInfo, summarize_run

RUN = KIT_ROOT / "tests" / "data" / "recorded" / "flashocc_smoke_cpu"


def test_training_records_of_a_real_run():
    log = parse_train(find_logs(RUN / "work_dir"), [RUN / "train_console.log"])
    assert log.iters_per_epoch == 24
    assert [(r.epoch, r.iter) for r in log.records[:3]] == [(1, 5), (1, 10), (1, 15)]
    assert len(log.records) == 6 * 4  # 4 logged intervals per epoch (5, 10, 15, 20)
    assert all(r.loss > 0 and r.time > 0 for r in log.records)
    assert log.records[-1].step == 6 * 24 - 4


def test_evaluation_output_of_a_real_run():
    result = parse_eval([RUN / "eval_console.log"])
    assert result is not None and result.miou == 5.39
    assert len(result.per_class) == 17 and result.per_class["terrain"] == 49.1


def test_summary_of_a_real_run(tmp_path):
    case = CaseInfo(case_name="smoke", device="cpu", rank_size=2, batch_size=2, accuracy=True)
    summarize_run(RUN / "work_dir", [RUN / "train_console.log", RUN / "eval_console.log"], tmp_path, case,
                  e2e_seconds=577.0)
    summary = json.loads((tmp_path / "smoke_summary.json").read_text())
    assert summary["accuracy"]["miou"] == 5.39 and summary["global_batch"] == 4
    assert 3.0 < summary["step_time_s"]["mean"] < 5.0
    assert abs(summary["fps"] - 4 / summary["step_time_s"]["mean"]) < 1e-9
