"""The results side of the launch scripts: log parsing, run summaries and the regression gate.

Fixtures (tests/data/README.md): `recorded/` are real mmcv logs of a toy model trained on CPU by mmcv's own runner;
`handmade/npu_8p` is an 8-NPU run written by hand so the summary numbers can be checked against hand computation.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import pytest

from flashocc_kit import cli
from flashocc_kit.commands import gate as gate_command
from flashocc_kit.errors import KitError
from flashocc_kit.occ3d import SCORED_CLASSES
from flashocc_kit.results import gate, logparse, summary
from flashocc_kit.results.logparse import NoIterationsError, NonFiniteLossError, RunLogs
from flashocc_kit.results.summary import CaseInfo, SummaryOptions, Warmup

DATA = Path(__file__).resolve().parent / "data"
RECORDED = DATA / "recorded" / "cpu_2rank"
RECORDED_NAN = DATA / "recorded" / "cpu_nan"
NPU = DATA / "handmade" / "npu_8p"
BASELINES = Path(__file__).resolve().parents[1] / "tools" / "baselines.json"

TRAIN = "2025-01-01 10:00:{s:02d},000 - mmdet - INFO - Epoch [{e}][{i}/{n}]\tlr: 1.000e-04, eta: 0:10:00, " \
        "time: {t:.3f}, data_time: 0.100, loss_occ: {loss:.4f}, loss: {loss:.4f}, grad_norm: 3.0000"


def train_line(epoch: int, it: int, time: float = 1.0, loss: float = 2.0, per_epoch: int = 20, s: int = 0) -> str:
    return TRAIN.format(e=epoch, i=it, n=per_epoch, t=time, loss=loss, s=s)


def copy_run(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def only(path: Path, pattern: str) -> Path:
    found = list(path.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def npu_case(**kw) -> CaseInfo:
    fields = {"case_name": "FlashOCC_8p_bs4_e2", "device": "npu", "rank_size": 8, "batch_size": 4,
              "device_type": "aarch64", **kw}
    return CaseInfo(**fields)


# --- parsing: real mmcv logs ---------------------------------------------------------------------------------------


def test_json_log_of_a_real_two_rank_run():
    log = logparse.parse_train(logparse.find_logs(RECORDED / "work_dir"))
    assert log.source_kind == "json" and log.source.name.endswith(".log.json")
    assert log.iters_per_epoch == 12 and not log.iters_per_epoch_estimated  # "[4/12]" of the text log
    assert [(r.epoch, r.iter) for r in log.records] == [(e, i) for e in (1, 2, 3) for i in (4, 8, 12)]
    assert [r.step for r in log.records] == [4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert log.epochs == 3
    first = log.records[0]
    assert first.time == pytest.approx(0.5727) and first.loss == pytest.approx(1.82117)
    assert first.losses == {"loss_occ": pytest.approx(1.78756), "loss_depth": pytest.approx(0.03361)}
    assert first.lr == pytest.approx(6e-05) and first.grad_norm == pytest.approx(6.72355)
    assert all(r.memory_mb is None for r in log.records)  # CPU: mmcv logs no memory
    assert log.meta == {"seed": 0, "exp_name": "flashocc-r50.py"}
    assert log.notes == []


def test_console_alone_gives_rank_zeros_records_despite_prefixes_and_warnings():
    from_json = logparse.parse_train(logparse.find_logs(RECORDED / "work_dir"))
    log = logparse.parse_train(RunLogs(None, None), [RECORDED / "console.log"])
    assert log.source_kind == "console"
    assert [(r.epoch, r.iter, r.step) for r in log.records] == [(r.epoch, r.iter, r.step) for r in from_json.records]
    assert len(log.records) == len(from_json.records)
    for text, exact in zip(log.records, from_json.records):
        assert text.time == pytest.approx(exact.time, abs=5e-4)  # the text log prints 3 decimals
        assert text.loss == pytest.approx(exact.loss, abs=5e-5)
        assert text.losses.keys() == exact.losses.keys()
    assert any("console" in n for n in log.notes)


def test_npu_text_log_gives_the_json_logs_records():
    logs = logparse.find_logs(NPU / "work_dir")
    from_json = logparse.parse_train(logs)
    from_text = logparse.parse_train(RunLogs(None, logs.text_log))
    assert from_text.source_kind == "text" and from_text.iters_per_epoch == 210
    assert [r.step for r in from_text.records] == [50, 100, 150, 200, 260, 310, 360, 410]
    assert from_text.records == from_json.records  # "eta: 1 day, 2:03:04" and the checkpoint line change nothing
    assert [r.memory_mb for r in from_text.records][:2] == [10521, 12345]


def test_evaluation_of_a_real_run_from_console_and_json_agree():
    logs = logparse.find_logs(RECORDED / "work_dir")
    ev = logparse.parse_eval([RECORDED / "console.log"], logs.json_log)
    assert ev.source.startswith("console") and ev.miou == 28.11 and ev.samples == 6
    assert list(ev.per_class) == list(SCORED_CLASSES)
    assert ev.per_class["bicycle"] is None and ev.per_class["others"] == 36.63 and ev.per_class["vegetation"] == 36.93
    assert ev.history == [(2, 28.11), (3, 28.11)] and ev.epoch == 3  # the JSON val lines, mIoU over 17 classes
    assert ev.notes == []
    from_json = logparse.parse_eval([], logs.json_log)
    assert from_json.source.startswith("JSON") and from_json.miou == 28.11 and from_json.epoch == 3
    for name, value in ev.per_class.items():
        assert (value is None) == (from_json.per_class[name] is None)
        if value is not None:
            assert from_json.per_class[name] == pytest.approx(value, abs=0.006)


def test_nan_loss_of_a_real_run_names_the_iteration():
    with pytest.raises(NonFiniteLossError) as err:
        logparse.parse_train(logparse.find_logs(RECORDED_NAN / "work_dir"))
    message = str(err.value)
    assert "iteration 8 (epoch 1, iter 8/12)" in message and "loss = nan" in message
    assert "last finite loss was 1.8212 at iteration 4" in message


def test_nan_loss_found_in_the_text_log_too(tmp_path):
    run = copy_run(RECORDED_NAN, tmp_path / "run")
    only(run / "work_dir", "*.log.json").unlink()
    with pytest.raises(NonFiniteLossError, match=r"iteration 8 \(epoch 1, iter 8/12\)"):
        logparse.parse_train(logparse.find_logs(run / "work_dir"))


# --- parsing: hand-made edge cases ---------------------------------------------------------------------------------


def test_interleaved_ranks_keep_the_lowest_rank_and_skip_a_line_cut_by_another_rank(tmp_path):
    console = tmp_path / "console.log"
    console.write_text("\n".join([
        "[default1]:/site-packages/torch/functional.py:504: UserWarning: torch.meshgrid: an indexing argument",
        "[default0]:" + train_line(1, 5, time=2.0, loss=3.0),
        "[default1]:" + train_line(1, 5, time=2.5, loss=9.0),  # a rank that logs too: not rank 0's numbers
        "[default0]:" + train_line(1, 10, time=1.5, loss=2.5).replace("loss: 2.5000, grad_norm: 3.0000",
                                                                      "loss: 2.5[default1]:Warning: skipped"),
        "[default0]:" + train_line(1, 15, time=1.0, loss=2.0),
        "[default1]:  warnings.warn(",
    ]) + "\n")
    log = logparse.parse_train(RunLogs(None, None), [console])
    assert [(r.iter, r.time, r.loss) for r in log.records] == [(5, 2.0, 3.0), (15, 1.0, 2.0)]
    assert any("2 ranks" in n and "[default0]:" in n for n in log.notes)
    assert any("1 incomplete" in n for n in log.notes)


@pytest.mark.parametrize("prefix", ["[rank0]:", "0: ", "[1,0]<stdout>:", "0: [default0]:", ""])
def test_launcher_prefixes_are_peeled(tmp_path, prefix):
    console = tmp_path / "console.log"
    console.write_text("".join(prefix + train_line(2, i, per_epoch=30) + "\n" for i in (10, 20)))
    log = logparse.parse_train(RunLogs(None, None), [console])
    assert [r.step for r in log.records] == [40, 50]  # (2 - 1) * 30 + iter


def test_duplicate_lines_counted_once(tmp_path):
    text = tmp_path / "20250101_100000.log"
    lines = [train_line(1, 5), train_line(1, 10), train_line(1, 10), train_line(1, 15)]
    text.write_text("\n".join(lines) + "\n")
    log = logparse.parse_train(RunLogs(None, text))
    assert [r.iter for r in log.records] == [5, 10, 15]
    assert any("1 duplicate" in n for n in log.notes)


def test_truncated_last_json_line_is_dropped_with_a_note(tmp_path):
    run = copy_run(RECORDED, tmp_path / "run")
    json_log = only(run / "work_dir", "*.log.json")
    lines = json_log.read_text().splitlines()
    train_lines = [i for i, line in enumerate(lines) if '"mode": "train"' in line]
    # the run was killed while writing the 8th train record
    json_log.write_text("\n".join(lines[: train_lines[7]]) + "\n" + lines[train_lines[7]][:40])
    log = logparse.parse_train(logparse.find_logs(run / "work_dir"))
    assert log.source_kind == "json" and len(log.records) == 7
    assert any("cut off" in n for n in log.notes)
    assert not any("unreadable" in n for n in log.notes)  # the one cut-off line is reported once


def test_a_complete_last_json_line_without_newline_is_kept(tmp_path):
    run = copy_run(RECORDED, tmp_path / "run")
    json_log = only(run / "work_dir", "*.log.json")
    json_log.write_text(json_log.read_text().rstrip("\n"))
    # the last line is a val line; the 9 train records all survive
    assert len(logparse.parse_train(logparse.find_logs(run / "work_dir")).records) == 9


def test_truncated_last_console_line_does_not_give_a_wrong_value(tmp_path):
    console = tmp_path / "console.log"
    console.write_text(train_line(1, 5, time=2.0) + "\n" + train_line(1, 10, time=1.25)[:-30])
    log = logparse.parse_train(RunLogs(None, None), [console])
    assert [r.iter for r in log.records] == [5]
    assert any("cut off" in n for n in log.notes)


def test_infinite_loss_in_text(tmp_path):
    text = tmp_path / "20250101_100000.log"
    text.write_text(train_line(1, 5, loss=2.0) + "\n" + train_line(1, 10).replace("loss: 2.0000,", "loss: inf,")
                    + "\n")
    with pytest.raises(NonFiniteLossError) as err:
        logparse.parse_train(RunLogs(None, text))
    assert "iteration 10 (epoch 1, iter 10/20)" in str(err.value) and "loss = inf" in str(err.value)


def test_infinite_loss_component_in_json(tmp_path):
    json_log = tmp_path / "20250101_100000.log.json"
    json_log.write_text('{"seed": 0}\n'
                        '{"mode": "train", "epoch": 1, "iter": 5, "lr": 0.0001, "loss_occ": Infinity, "loss": 2.0, '
                        '"time": 1.0}\n')
    with pytest.raises(NonFiniteLossError, match="loss_occ = inf.*it was never finite"):
        logparse.parse_train(RunLogs(json_log, None))


def test_no_iteration_names_every_file_looked_at(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "20250101_100000.log.json").write_text('{"env_info": "x", "seed": 0}\n')
    (work / "20250101_100000.log").write_text("2025-01-01 10:00:00,000 - mmdet - INFO - Environment info:\n")
    console = tmp_path / "console.log"
    console.write_text("[default0]:Traceback (most recent call last):\n[default0]:RuntimeError: out of memory\n")
    with pytest.raises(NoIterationsError) as err:
        logparse.parse_train(logparse.find_logs(work), [console, tmp_path / "absent.log"])
    message = str(err.value)
    for expected in ("no training iteration was logged", "20250101_100000.log.json: 1 lines, 0 training records",
                     "20250101_100000.log: 1 lines", f"console log {console}: 2 lines",
                     f"{tmp_path / 'absent.log'}: missing", "log_config interval"):
        assert expected in message


def test_empty_files_and_an_empty_work_dir(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(NoIterationsError, match="JSON log: none found"):
        logparse.parse_train(logparse.find_logs(work))
    (work / "20250101_100000.log.json").write_text("")
    (work / "20250101_100000.log").write_text("")
    with pytest.raises(NoIterationsError, match="0 lines, 0 training records"):
        logparse.parse_train(logparse.find_logs(work))


def test_missing_work_dir_is_named(tmp_path):
    with pytest.raises(KitError, match="work dir .*nowhere does not exist"):
        logparse.find_logs(tmp_path / "nowhere")


def test_unreadable_json_log_falls_back_to_the_text_log(tmp_path):
    run = copy_run(RECORDED, tmp_path / "run")
    only(run / "work_dir", "*.log.json").write_bytes(b"\x00\xff garbage {{{\n" * 5)
    log = logparse.parse_train(logparse.find_logs(run / "work_dir"))
    assert log.source_kind == "text" and log.source.suffix == ".log"
    assert [r.step for r in log.records] == [4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert any("read from the text log" in n and "5 incomplete or unreadable" in n for n in log.notes)


def test_json_only_estimates_iterations_per_epoch_unless_told(tmp_path):
    run = copy_run(RECORDED, tmp_path / "run")
    only(run / "work_dir", "20*.log").unlink()
    estimated = logparse.parse_train(logparse.find_logs(run / "work_dir"))
    assert estimated.iters_per_epoch == 12 and estimated.iters_per_epoch_estimated  # the largest logged iter
    assert any("estimated as 12" in n for n in estimated.notes)
    told = logparse.parse_train(logparse.find_logs(run / "work_dir"), iters_per_epoch=13)
    assert [r.step for r in told.records][:4] == [4, 8, 12, 17] and not told.iters_per_epoch_estimated


def test_iter_based_runner_and_several_learning_rates(tmp_path):
    text = tmp_path / "20250101_100000.log"
    line = ("2025-01-01 10:00:00,000 - mmdet - INFO - Iter [{i}/1000]\tlr_img: 1.000e-04 lr_pts: 2.000e-04, "
            "eta: 0:01:00, time: 0.500, data_time: 0.010, loss: 1.5000")
    text.write_text("\n".join(line.format(i=i) for i in (100, 200)) + "\n")
    log = logparse.parse_train(RunLogs(None, text))
    assert [(r.step, r.lr) for r in log.records] == [(100, 1e-4), (200, 1e-4)]
    assert log.iters_per_epoch is None


def test_eval_block_with_lost_header_and_a_cut_off_evaluation(tmp_path):
    console = tmp_path / "eval.log"
    first = ["===> per class IoU of 10 samples:", *[f"===> {n} - IoU = 20.0" for n in SCORED_CLASSES],
             "===> mIoU of 10 samples: 20.0"]
    # a second evaluation whose header went missing, and a third cut off before its mIoU line
    second = [f"0: ===> {n} - IoU = 30.0" for n in SCORED_CLASSES] + ["0: ===> mIoU of 10 samples: 30.0"]
    third = ["===> per class IoU of 10 samples:", "===> others - IoU = 40.0"]
    console.write_text("\n".join(first + second + third) + "\n")
    ev = logparse.parse_eval([console])
    assert ev.miou == 30.0 and ev.samples == 10 and set(ev.per_class.values()) == {30.0}
    assert any("no mIoU (cut off)" in n for n in ev.notes)


def test_console_and_json_disagreeing_is_noted(tmp_path):
    console = tmp_path / "eval.log"
    console.write_text("===> mIoU of 6 samples: 12.5\n")
    ev = logparse.parse_eval([console], only(RECORDED / "work_dir", "*.log.json"))
    assert ev.miou == 12.5 and ev.epoch is None
    assert any("differs from the JSON log's last (28.11" in n for n in ev.notes)
    assert any("per-class IoU missing for others" in n for n in ev.notes)


def test_no_evaluation_anywhere_is_none(tmp_path):
    assert logparse.parse_eval([RECORDED_NAN / "console.log"], only(RECORDED_NAN / "work_dir", "*.log.json")) is None


# --- summaries -----------------------------------------------------------------------------------------------------


def test_npu_summary_numbers_match_hand_computation(tmp_path):
    out = tmp_path / "out"
    s = summary.summarize_run(NPU / "work_dir", NPU / "console.log", out, npu_case(), e2e_seconds=2000.4,
                              environment={"torch": "2.1.0", "device_kind": "npu", "device_count": 8})
    # 8 records, warm-up = ceil(10% of 8) = 1: steady step times 4.3 4.2 4.1 4.4 4.2 4.3 4.1, sum 29.6
    assert s.training_time_s == pytest.approx(29.6 / 7)
    assert s.fps == pytest.approx(32 / (29.6 / 7))  # 7.5676: global batch 8 x 4
    # sorted 4.1 4.1 4.2 4.2 4.3 4.3 4.4: p50 at rank 3 = 4.2; p90 at 5.4 = 4.3 + 0.4 x 0.1; p99 at 5.94
    assert s.step_time_s["p50"] == pytest.approx(4.2)
    assert s.step_time_s["p90"] == pytest.approx(4.34)
    assert s.step_time_s["p99"] == pytest.approx(4.394)
    assert (s.step_time_s["min"], s.step_time_s["max"]) == (4.1, 4.4)
    assert s.data_time_s_mean == pytest.approx((0.12 + 0.10 + 0.11 + 0.52 + 0.10 + 0.12 + 0.11) / 7)
    assert s.memory_mb_max == 12346
    assert s.window == {"first_iter": 100, "last_iter": 410, "records": 7, "skipped_records": 1,
                        "total_records": 8, "warmup": "first 10% of logged records"}
    assert s.actual_loss == pytest.approx(0.9876)
    assert s.evaluation.miou == 32.02 and s.evaluation.per_class["vegetation"] is None
    assert s.evaluation.epoch == 2 and s.evaluation.samples == 6019


def test_modelzoo_log_is_exactly_the_launch_scripts_format(tmp_path):
    out = tmp_path / "out"
    summary.summarize_run(NPU / "work_dir", [NPU / "console.log"], out, npu_case(), e2e_seconds=2000.4)
    assert (out / "FlashOCC_8p_bs4_e2.log").read_text() == (
        "Network = FlashOCC\n"
        "DeviceType = aarch64\n"
        "RankSize = 8\n"
        "BatchSize = 4\n"
        "CaseName = FlashOCC_8p_bs4_e2\n"
        "E2ETrainingTime = 2000\n"
        "TrainingTime = 4.2286\n"
        "ActualFPS = 7.57\n"
        "ActualLoss = 0.9876\n"
        "mIoU = 32.02\n")


def test_json_summary_is_strict_json_with_the_detail(tmp_path):
    out = tmp_path / "out"
    env = {"versions": {"torch": "2.1.0", "mmcv": "1.7.2"}, "device_kind": "npu", "device_count": 8}
    summary.summarize_run(NPU / "work_dir", [NPU / "console.log"], out, npu_case(precision="fp16-backbone"),
                          e2e_seconds=2000.4, environment=env)

    def no_nan(name):
        raise AssertionError(f"{name} in the JSON summary")

    data = json.loads((out / "FlashOCC_8p_bs4_e2_summary.json").read_text(), parse_constant=no_nan)
    assert data["modelzoo"]["TrainingTime"] == "4.2286" and data["modelzoo"]["mIoU"] == "32.02"
    assert (data["device"], data["precision"], data["global_batch"], data["rank_size"]) == ("npu", "fp16-backbone",
                                                                                           32, 8)
    assert data["training_time_s"] == pytest.approx(4.228571, abs=1e-6)
    assert data["steady_state"]["first_iter"] == 100 and data["steady_state"]["records"] == 7
    assert data["step_time_s"]["p90"] == pytest.approx(4.34)
    assert data["memory_mb_max"] == 12346 and data["epochs"] == 2 and data["iters_per_epoch"] == 210
    assert data["accuracy"]["per_class_iou"]["vegetation"] is None
    assert data["accuracy"]["per_class_iou"]["car"] == 44.36
    assert data["environment"] == env
    assert data["files"]["curves"].endswith("FlashOCC_8p_bs4_e2_curves.png")


def test_curves_png_is_written(tmp_path):
    out = tmp_path / "out"
    summary.summarize_run(RECORDED / "work_dir", RECORDED / "console.log", out,
                          CaseInfo(case_name="cpu2", device="cpu", rank_size=2, batch_size=2))
    png = (out / "cpu2_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_without_matplotlib_the_rest_is_still_written(tmp_path, monkeypatch):
    def missing(*args, **kwargs):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(summary.plot, "write_curves", missing)
    out = tmp_path / "out"
    s = summary.summarize_run(NPU / "work_dir", None, out, npu_case(), e2e_seconds=1.0)
    assert not (out / "FlashOCC_8p_bs4_e2_curves.png").exists()
    assert (out / "FlashOCC_8p_bs4_e2.log").is_file() and (out / "FlashOCC_8p_bs4_e2_summary.json").is_file()
    assert any("no curves PNG" in n for n in s.notes)


def test_warmup_by_record_count_and_loss_window(tmp_path):
    options = SummaryOptions(warmup=Warmup(records=3), loss_window=4)
    s = summary.summarize_run(NPU / "work_dir", None, tmp_path, npu_case(), e2e_seconds=1.0, options=options,
                              plot_curves=False)
    # steady 4.1 4.4 4.2 4.3 4.1: mean 21.1 / 5 = 4.22, FPS 32 / 4.22
    assert s.training_time_s == pytest.approx(4.22) and s.window["first_iter"] == 200
    assert s.modelzoo()[7] == ("ActualFPS", "7.58")
    assert s.actual_loss == pytest.approx((1.5 + 1.31 + 1.15 + 0.9876) / 4)


def test_too_few_steady_records_is_said_not_averaged(tmp_path):
    options = SummaryOptions(warmup=Warmup(records=6))
    with pytest.raises(KitError) as err:
        summary.summarize_run(NPU / "work_dir", None, tmp_path / "out", npu_case(), options=options)
    assert "only 2 logged training record(s) remain" in str(err.value) and "skipping 6 of 8" in str(err.value)
    assert "--warmup" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_e2e_time_estimated_from_the_text_log_when_not_given(tmp_path):
    s = summary.summarize_run(NPU / "work_dir", None, tmp_path, npu_case(), plot_curves=False)
    # first line 10:00:00,000, last 10:32:18,049
    assert s.e2e_seconds == pytest.approx(1938.049) and "estimated" in s.e2e_source
    assert ("E2ETrainingTime", "1938") in s.modelzoo()


@pytest.fixture
def npu_perf_run(tmp_path) -> Path:
    """The hand-made NPU run without its evaluation: a performance run."""
    run = copy_run(NPU, tmp_path / "run")
    json_log = only(run / "work_dir", "*.log.json")
    json_log.write_text("".join(line + "\n" for line in json_log.read_text().splitlines() if '"val"' not in line))
    return run / "work_dir"


def test_perf_run_without_evaluation_has_no_miou_line(tmp_path, npu_perf_run):
    s = summary.summarize_run(npu_perf_run, None, tmp_path / "out", npu_case(), e2e_seconds=5.0, plot_curves=False)
    text = (tmp_path / "out" / "FlashOCC_8p_bs4_e2.log").read_text()
    assert "mIoU" not in text and text.endswith("ActualLoss = 0.9876\n")
    assert s.to_dict()["accuracy"] is None


def test_accuracy_run_without_evaluation_fails(tmp_path, npu_perf_run):
    with pytest.raises(KitError, match="accuracy run but no evaluation result.*no console log given"):
        summary.summarize_run(npu_perf_run, None, tmp_path / "out", npu_case(accuracy=True))
    assert not (tmp_path / "out").exists()


def test_summarize_run_with_no_iteration_fails_cleanly(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(NoIterationsError):
        summary.summarize_run(work, [tmp_path / "console.log"], tmp_path / "out", npu_case())
    assert not (tmp_path / "out").exists()


def test_percentile_matches_numpy():
    np = pytest.importorskip("numpy")
    values = [4.2, 9.1, 3.3, 4.4, 4.1, 4.25, 5.0, 4.0, 4.3, 4.15, 4.35]
    for q in (0, 10, 50, 90, 99, 100):
        assert summary.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert summary.percentile([7.0], 99) == 7.0


def test_warmup_parse_and_case_validation():
    assert Warmup.parse("5") == Warmup(records=5)
    assert Warmup.parse("0.2") == Warmup(fraction=0.2)
    assert Warmup.parse("20%") == Warmup(fraction=0.2)
    assert Warmup(fraction=0.1).count(30) == 3  # not 4: 0.1 x 30 is 3.0000000000000004
    for bad in ("abc", "1.5", "-1"):
        with pytest.raises(KitError):
            Warmup.parse(bad)
    with pytest.raises(KitError, match="device 'gpu'"):
        CaseInfo(case_name="x", device="gpu", rank_size=1, batch_size=1)
    with pytest.raises(KitError, match="precision"):
        CaseInfo(case_name="x", device="cpu", rank_size=1, batch_size=1, precision="bf16")
    with pytest.raises(KitError, match="plain file name"):
        CaseInfo(case_name="../x", device="cpu", rank_size=1, batch_size=1)


def test_summarize_command_then_resummarize_with_another_warmup(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["summarize", "--work-dir", str(NPU / "work_dir"), "--console-log", str(NPU / "console.log"),
                         "--case-name", "FlashOCC_8p_bs4_e2", "--out", str(out), "--device", "npu",
                         "--rank-size", "8", "--batch-size", "4", "--device-type", "aarch64", "--accuracy",
                         "--no-plot"])
    assert code == 0
    assert "TrainingTime = 4.2286" in capsys.readouterr().out
    summary_json = out / "FlashOCC_8p_bs4_e2_summary.json"
    assert json.loads(summary_json.read_text())["steady_state"]["records"] == 7
    # again, naming only what changes: the case comes from the earlier summary
    code = cli.main(["summarize", "--work-dir", str(NPU / "work_dir"), "--console-log", str(NPU / "console.log"),
                         "--case-name", "FlashOCC_8p_bs4_e2", "--out", str(out), "--warmup", "3", "--no-plot"])
    assert code == 0
    data = json.loads(summary_json.read_text())
    assert data["steady_state"]["records"] == 5 and data["training_time_s"] == pytest.approx(4.22)
    assert (data["rank_size"], data["device_type"], data["accuracy_run"]) == (8, "aarch64", True)


def test_summarize_command_exit_codes_on_bad_runs(tmp_path, capsys):
    args = ["--case-name", "c", "--out", str(tmp_path / "out"), "--device", "cpu", "--rank-size", "1",
            "--batch-size", "1", "--no-plot"]
    assert cli.main(["summarize", "--work-dir", str(RECORDED_NAN / "work_dir"), *args]) == 2
    assert "non-finite at iteration 8" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["summarize", "--work-dir", str(tmp_path / "empty"), *args]) == 2
    assert "no training iteration was logged" in capsys.readouterr().err
    args = ["--work-dir", str(NPU / "work_dir"), "--case-name", "new", "--out", str(tmp_path)]
    assert cli.main(["summarize", *args]) == 2
    assert "--device, --rank-size, --batch-size needed" in capsys.readouterr().err


# --- the gate ------------------------------------------------------------------------------------------------------


# The learning rate the launcher gives each global batch (the published runs' too).
LR_OF_GLOBAL_BATCH = {32: 1e-4, 192: 2.45e-4, 64: 1.41e-4, 4: 2e-3}


def write_summary(path: Path, *, step: float | None = 4.30, miou: float | None = None, epochs: int = 24,
                  device: str = "npu", precision: str = "fp32", rank_size: int = 8, batch_size: int = 4,
                  lr: float | None | str = "launcher") -> Path:
    gbs = rank_size * batch_size
    data = {"schema": 1, "case_name": "FlashOCC_8p_bs4_e24", "network": "FlashOCC", "device": device,
            "precision": precision, "rank_size": rank_size, "batch_size": batch_size,
            "global_batch": gbs, "epochs": epochs, "training_time_s": step,
            "accuracy": None if miou is None else {"miou": miou},
            "lr": LR_OF_GLOBAL_BATCH.get(gbs) if lr == "launcher" else lr}
    path.write_text(json.dumps(data))
    return path


def run_gate(capsys, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout with each line's runs of spaces squeezed (table padding), stderr."""
    code = cli.main(["gate", *args])
    captured = capsys.readouterr()
    out = "\n".join(" ".join(line.split()) for line in captured.out.splitlines())
    return code, out, captured.err


def test_published_baselines_are_shipped():
    shipped = gate.load_baselines(BASELINES)
    by_name = {b.name: b for b in shipped if b.keys["device"] != "cpu"}
    (smoke,) = [b for b in shipped if b.keys["device"] == "cpu"]  # the CPU smoke run's accuracy floor
    assert smoke.miou is not None and smoke.step_time_s is None and smoke.epochs == 10
    expected = {"npu-8p-fp32-gbs32": (31.79, 4.22), "npu-8p-fp32-gbs192": (30.27, 1.83),
                "npu-8p-fp16-backbone-gbs192": (30.15, 1.34), "competitor-a-8p-fp32-gbs32": (31.73, 7.823),
                "competitor-a-8p-fp32-gbs192": (30.14, 2.83)}
    assert {n: (b.miou, b.step_time_s) for n, b in by_name.items()} == expected
    assert all(b.epochs == 24 and b.keys["rank_size"] == 8 for b in by_name.values())
    assert by_name["npu-8p-fp32-gbs32"].source == "drivingsdk-2025-03"
    assert "fd30fd06f7a238eabe12f236355791b28df24b62" in by_name["npu-8p-fp32-gbs32"].source_text
    assert by_name["npu-8p-fp16-backbone-gbs192"].source == "drivingsdk-2025-08"
    assert "edfd8a31dd58526ccede28ca4e02cbc04bd5d831" in by_name["competitor-a-8p-fp32-gbs192"].source_text
    assert by_name["competitor-a-8p-fp32-gbs32"].hardware == "8 x competitor A GPUs"
    raw = json.loads(BASELINES.read_text())
    fps = {b["name"]: b["fps"] for b in raw["baselines"]}
    assert fps["npu-8p-fp32-gbs192"] == 104.85 and fps["competitor-a-8p-fp32-gbs192"] == 67.98
    assert fps["npu-8p-fp16-backbone-gbs192"] == 143.17


def test_gate_passes_and_prints_the_table(tmp_path, capsys):
    path = write_summary(tmp_path / "s.json", step=4.30, miou=31.60)
    assert cli.main(["gate", "--summary", str(path), "--baselines", str(BASELINES)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    assert lines[header].split() == ["metric", "baseline", "measured", "limit", "verdict"]
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    assert lines[header + 2].split() == ["step", "time", "(s/step)", "4.220", "4.300", "<=", "4.431", "PASS"]
    assert lines[header + 3].split() == ["mIoU", "(%)", "31.79", "31.60", ">=", "31.49", "PASS"]
    # columns line up: each column starts where its header does
    for column, cell in (("measured", "4.300"), ("limit", "<= 4.431"), ("verdict", "PASS")):
        assert lines[header].index(column) == lines[header + 2].index(cell)
    assert "baseline: npu-8p-fp32-gbs32: 8 x Atlas 800T A2 (source: drivingsdk-2025-03)" in lines
    assert lines[-1] == "PASS: 2 check(s)"


def test_gate_fails_on_slow_steps(tmp_path, capsys):
    path = write_summary(tmp_path / "s.json", step=4.50)
    code, out, _ = run_gate(capsys, "--summary", str(path), "--baselines", str(BASELINES))
    assert code == 1
    assert "4.220 4.500 <= 4.431 FAIL" in out and out.splitlines()[-1] == "FAIL: step time (s/step)"


def test_gate_fails_on_low_miou_even_when_fast(tmp_path, capsys):
    path = write_summary(tmp_path / "s.json", step=1.80, miou=29.90, batch_size=24)
    code, out, _ = run_gate(capsys, "--summary", str(path), "--baselines", str(BASELINES))
    assert code == 1 and "npu-8p-fp32-gbs192" in out
    assert "30.27 29.90 >= 29.97 FAIL" in out and out.splitlines()[-1] == "FAIL: mIoU (%)"


def test_gate_limits_are_inclusive(tmp_path):
    result = gate.run_gate(write_summary(tmp_path / "s.json", step=4.431, miou=31.49), BASELINES)
    assert result.passed and [c.limit for c in result.checks] == [4.431, 31.49]
    result = gate.run_gate(write_summary(tmp_path / "s.json", step=4.4311, miou=31.49), BASELINES)
    assert not result.passed


def test_perf_summary_checks_only_perf(tmp_path):
    result = gate.run_gate(write_summary(tmp_path / "s.json", step=4.0, epochs=1), BASELINES)
    assert [c.metric for c in result.checks] == ["step time (s/step)"] and result.passed


def test_tolerances_from_the_command_line(tmp_path, capsys):
    path = write_summary(tmp_path / "s.json", step=4.60, miou=31.35)
    assert run_gate(capsys, "--summary", str(path), "--baselines", str(BASELINES))[0] == 1
    code, out, _ = run_gate(capsys, "--summary", str(path), "--baselines", str(BASELINES),
                            "--step-time-tolerance", "1.10", "--miou-tolerance", "0.5")
    assert code == 0 and "<= 4.642" in out and ">= 31.29" in out


def test_tolerances_per_baseline_and_command_line_over_them(tmp_path, capsys):
    baselines = tmp_path / "b.json"
    baselines.write_text(json.dumps({"baselines": [
        {"name": "cpu-smoke", "device": "cpu", "precision": "fp32", "global_batch": 4, "rank_size": 2,
         "step_time_s": 0.2, "tolerances": {"step_time_factor": 1.5}}]}))
    path = write_summary(tmp_path / "s.json", step=0.29, device="cpu", rank_size=2, batch_size=2)
    code, out, _ = run_gate(capsys, "--summary", str(path), "--baselines", str(baselines))
    assert code == 0 and "<= 0.300" in out  # the baseline's 1.5, not the default 1.05
    code, out, _ = run_gate(capsys, "--summary", str(path), "--baselines", str(baselines),
                            "--step-time-tolerance", "1.2")
    assert code == 1 and "<= 0.240" in out


def test_default_tolerances_live_in_one_place(tmp_path):
    defaults = gate.Tolerances()
    assert (defaults.step_time_factor, defaults.miou_drop) == (1.05, 0.3)
    result = gate.run_gate(write_summary(tmp_path / "s.json", step=1.0, miou=30.0, batch_size=24), BASELINES)
    assert result.tolerances == defaults
    assert "step_time_factor" not in json.dumps(json.loads(BASELINES.read_text())["baselines"])
    parser = argparse.ArgumentParser()
    gate_command.register(parser.add_subparsers())
    assert "1.05" in parser._subparsers._group_actions[0].choices["gate"].format_help()


def test_lookup_overrides_compare_with_another_device(tmp_path, capsys):
    path = write_summary(tmp_path / "s.json", step=7.9)
    code, out, _ = run_gate(capsys, "--summary", str(path), "--baselines", str(BASELINES), "--device", "cuda")
    assert code == 0 and "competitor-a-8p-fp32-gbs32" in out and "<= 8.214" in out
    code, _, err = run_gate(capsys, "--summary", str(path), "--baselines", str(BASELINES),
                            "--precision", "fp16-backbone", "--global-batch", "192")
    # another global batch's baseline was trained with another lr: not compared, even when asked for
    assert code == 2 and "trained with lr 0.0001, baseline npu-8p-fp16-backbone-gbs192 with lr 0.000245" in err


def test_the_gate_refuses_a_run_trained_with_another_learning_rate(tmp_path, capsys):
    path = write_summary(tmp_path / "s.json", step=4.0, lr=2e-4)
    code, _, err = run_gate(capsys, "--summary", str(path), "--baselines", str(BASELINES))
    assert code == 2 and "unlike runs are not compared" in err and "--lr 0.0001" in err
    path = write_summary(tmp_path / "s.json", step=4.0, lr=None)
    code, _, err = run_gate(capsys, "--summary", str(path), "--baselines", str(BASELINES))
    assert code == 2 and "records no learning rate" in err
    path = write_summary(tmp_path / "s.json", step=1.8, batch_size=24)  # gbs 192, the launcher's lr for it
    code, out, _ = run_gate(capsys, "--summary", str(path), "--baselines", str(BASELINES))
    assert code == 0 and "npu-8p-fp32-gbs192" in out


@pytest.mark.parametrize(("setup", "message"), [
    (lambda d: d / "missing.json", "summary .*missing.json does not exist"),
    (lambda d: write_summary(d / "s.json", batch_size=8),
     "no baseline for device npu, precision fp32, global_batch 64.*same device and precision: npu-8p"),
    (lambda d: write_summary(d / "s.json", rank_size=4, batch_size=8), "no baseline for .*rank_size 4"),
    (lambda d: write_summary(d / "s.json", miou=30.0, epochs=3), "trained 3 epoch.*after 24"),
    (lambda d: write_summary(d / "s.json", step=None), "neither a step time"),
    (lambda d: (d / "s.json").write_text("{not json") and d / "s.json", "not readable JSON"),
])
def test_unusable_input_exits_2_with_a_message(tmp_path, capsys, setup, message):
    path = setup(tmp_path)
    code, out, err = run_gate(capsys, "--summary", str(path), "--baselines", str(BASELINES))
    assert code == 2 and out == ""
    assert re.search(message, err), err


def test_unusable_baselines_files(tmp_path, capsys):
    summary_path = write_summary(tmp_path / "s.json")
    cases = {
        "missing": None,
        "no list": {"baselines": []},
        "no key": {"baselines": [{"name": "x", "device": "npu", "global_batch": 32, "step_time_s": 1.0}]},
        "bad value": {"baselines": [{"name": "x", "device": "npu", "precision": "fp32", "global_batch": 32,
                                     "step_time_s": -1}]},
        "bad tolerance": {"baselines": [{"name": "x", "device": "npu", "precision": "fp32", "global_batch": 32,
                                         "step_time_s": 1.0, "tolerances": {"step_factor": 2}}]},
        "ambiguous": {"baselines": [{"name": n, "device": "npu", "precision": "fp32", "global_batch": 32,
                                     "step_time_s": 1.0} for n in ("a", "b")]},
        "no mIoU": {"baselines": [{"name": "x", "device": "npu", "precision": "fp32", "global_batch": 32,
                                   "step_time_s": 4.0}]},
    }
    expected = {"missing": "does not exist", "no list": 'no "baselines" list', "no key": "entry x: needs",
                "bad value": "step_time_s must be a positive number", "bad tolerance": "unknown tolerance",
                "ambiguous": "several baselines match", "no mIoU": "has no mIoU to compare with"}
    for name, content in cases.items():
        baselines = tmp_path / f"{name}.json"
        if content is not None:
            baselines.write_text(json.dumps(content))
        target = write_summary(tmp_path / "acc.json", miou=31.0) if name == "no mIoU" else summary_path
        code, _, err = run_gate(capsys, "--summary", str(target), "--baselines", str(baselines))
        assert code == 2 and expected[name] in err, (name, err)


def test_most_specific_baseline_wins(tmp_path):
    baselines = tmp_path / "b.json"
    common = {"device": "cpu", "precision": "fp32", "global_batch": 4}
    baselines.write_text(json.dumps({"baselines": [
        {"name": "any", **common, "step_time_s": 1.0},
        {"name": "this case", **common, "case_name": "FlashOCC_8p_bs4_e24", "step_time_s": 2.0}]}))
    path = write_summary(tmp_path / "s.json", step=1.5, device="cpu", rank_size=2, batch_size=2)
    result = gate.run_gate(path, baselines)
    assert result.baseline.name == "this case" and result.passed


def test_gate_on_a_summary_written_by_summarize_run(tmp_path, capsys):
    out = tmp_path / "out"
    summary.summarize_run(RECORDED / "work_dir", RECORDED / "console.log", out,
                          CaseInfo(case_name="cpu2", device="cpu", rank_size=2, batch_size=2, accuracy=True),
                          plot_curves=False)
    baselines = tmp_path / "b.json"
    entry = {"name": "cpu-smoke", "device": "cpu", "precision": "fp32", "global_batch": 4, "rank_size": 2,
             "epochs": 3, "miou": 28.2, "step_time_s": 0.2}
    baselines.write_text(json.dumps({"baselines": [entry]}))
    code, text, _ = run_gate(capsys, "--summary", str(out / "cpu2_summary.json"), "--baselines", str(baselines))
    assert code == 0 and "28.20 28.11 >= 27.90 PASS" in text
    entry["miou"] = 28.5
    baselines.write_text(json.dumps({"baselines": [entry]}))
    code, text, _ = run_gate(capsys, "--summary", str(out / "cpu2_summary.json"), "--baselines", str(baselines))
    assert code == 1 and "28.50 28.11 >= 28.20 FAIL" in text


def test_kit_cli_registers_the_results_commands():
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert "gate" in commands and "summarize" in commands
    assert cli.main(["gate", "--summary", "/nonexistent.json"]) == 2
