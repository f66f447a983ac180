"""`kit.py bench pipeline|bevpool`: end to end in quick mode, through the kit's parser, writing the
JSON the README table is made from; and the upstream loader leaves the patched registry alone."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch", reason="needs torch: run the suite in the kit's environment")


def kit_main(argv: list[str]) -> int:
    """cli.main with `bench` registered (whether or not cli.py registers it already)."""
    from flashocc_kit import bench, cli

    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0]
    if "bench" not in commands.choices:
        bench.register(commands)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def upstream_available(flashocc_root):
    from flashocc_kit.bench import upstream
    from flashocc_kit.errors import KitError
    from flashocc_kit.pins import default_sources_dir

    try:
        upstream.pristine_text(flashocc_root, upstream.PIPELINE_FILES["loading"], default_sources_dir())
    except KitError as exc:
        pytest.skip(f"upstream's pristine pipeline is not available: {exc}")
    return flashocc_root


def test_upstream_modules_load_beside_the_patched_ones(upstream_available):
    from mmdet3d.datasets.builder import PIPELINES

    from flashocc_kit.bench import upstream
    from projects.mmdet3d_plugin.datasets.pipelines import loading

    modules = upstream.pipeline_modules(upstream_available)
    assert modules[0].__name__ == "flashocc_kit_upstream.loading"
    assert PIPELINES.get("PrepareImageInputs") is loading.PrepareImageInputs  # not replaced
    assert modules[0].PrepareImageInputs is not loading.PrepareImageInputs
    assert "fast" not in modules[0].PrepareImageInputs.__init__.__code__.co_varnames  # pristine
    assert "register_module" not in vars(PIPELINES)  # the suppression was undone


def test_bench_pipeline_quick_writes_the_documented_json(upstream_available, tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    assert kit_main(["--workspace", str(upstream_available.parent), "bench", "pipeline", "--quick",
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "samples/s per worker" in printed and "DataLoader samples/s" in printed
    doc = json.loads(out.read_text())
    assert doc["kind"] == "flashocc-kit bench pipeline"
    assert {"cpu", "cores", "arch", "python", "load_average_start", "load_average_end"} <= set(doc["machine"])
    assert {"torch", "numpy", "pillow"} <= set(doc["versions"])
    train = doc["train"]
    up, pa = train["variants"]["upstream"], train["variants"]["patched"]
    assert set(up["steps_ms"]) >= {"PrepareImageInputs", "PointToMultiViewDepth", "LoadPointsFromFile"}
    assert "PointToMultiViewDepth" not in pa["steps_ms"]
    assert up["total_ms"] > 0 and pa["samples_per_s"] > 0
    assert train["ratio"] == pytest.approx(up["total_ms"] / pa["total_ms"], rel=1e-2)
    assert train["exactness"]["identical"]["patched"] == train["exactness"]["compared"]["patched"] > 0
    assert "median_db" in train["jpeg_draft_psnr"]
    assert doc["dataloader"][0]["workers"] == 1 and doc["dataloader"][0]["upstream"] > 0
    depth = doc["depth"]
    assert depth["stage"] == "PointToMultiViewDepth" and depth["stage_ms"]["patched"] > 0
    assert depth["exactness"]["identical"]["patched"] == depth["exactness"]["compared"]["patched"]
    assert depth["gt_depth_nonzero_pixels"] > 0
    assert set(doc["targets"]) == {"train_ratio", "depth_stage_ratio"}
    assert all({"target", "measured", "met"} <= set(t) for t in doc["targets"].values())


def test_bench_bevpool_quick_writes_the_documented_json(flashocc_root, tmp_path, capsys):
    out = tmp_path / "bevpool.json"
    assert kit_main(["--workspace", str(flashocc_root.parent), "bench", "bevpool", "--quick",
                     "--json", str(out)]) == 0
    assert "fwd+bwd ms" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["kind"] == "flashocc-kit bench bevpool"
    (row,) = doc["cases"]
    assert row["batch"] == 1 and row["points"] > 100_000 and row["outputs_agree"]
    for variant in ("portable", "sort-and-interval"):
        v = row[variant]
        assert v["fwd_bwd_ms"] > 0 and v["prepare_ms"] > 0
        assert v["memory"]["profiler_peak_mib"]["step"] > 0
    # the upstream algorithm keeps (points x C) products for backward: several times the port's peak
    assert row["sort-and-interval"]["memory"]["profiler_peak_mib"]["step"] > \
        row["portable"]["memory"]["profiler_peak_mib"]["step"]
    assert {"fwd_bwd_ratio", "step_ratio", "peak_memory_ratio"} <= set(row)
    assert set(doc["target"]) == {"fwd_bwd_ratio", "met"}
