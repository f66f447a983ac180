"""What a run is: the request from the command line, completed from the config it trains.

The config owns the batch size per device, the epochs, the data-loader workers and the data root;
the launcher owns the device count and a performance run's length. Every change to the config
reaches mmcv as --cfg-options (no file is edited).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import configfile
from ..errors import KitError
from ..occ3d import info_file
from ..results.summary import PRECISIONS  # noqa: F401 (the launcher's choices)
from ..settings import smoke_requested
from .nodes import Nodes

CONFIG = "projects/configs/flashocc/flashocc-r50.py"
SMOKE_CONFIG = "projects/configs/flashocc/flashocc-r50-smoke.py"
NETWORK = "FlashOCC_R50"
MODES = {
    "perf": "performance: a bounded number of iterations (--max-iters)",
    "full": "accuracy: --epochs epochs, then evaluation of the last (EMA) checkpoint",
    "seed": "the seed README's interface: --epochs=N is a performance run of N epochs, none the accuracy run",
    "smoke": "the CPU smoke run on the synthetic set: train, evaluate, pictures",
}
DEVICES = 8  # per node: the seed's 8-card runs
SMOKE_DEVICES = 2  # CPU processes of the smoke run
MAX_ITERS = 200  # a performance run's length
# Where runs write, under the FlashOCC root (the seed's layout): mmcv's work dirs and the summaries.
WORK_DIRS = Path("work_dirs")
OUTPUT_DIR = Path("test") / "output"
# The learning rate follows the global batch: the config's lr is meant for its samples_per_gpu on the
# launcher's default device count (flashocc-r50.py: 1e-4 at 8 x 4 = 32, the seed's), and a run of another
# global batch gets lr x sqrt(global batch / that), to LR_DIGITS significant digits (gbs 192: 2.45e-4, the
# reference port's 2025-08 value), unless --lr is given.
LR_DIGITS = 3
# One command per published recipe: what the reference port's runs used beyond the config.
PRESETS = {
    "drivingsdk-2025-08": {"batch_size": 24, "workers": 24, "lr": 2.45e-4,
                           "about": "the reference port's 2025-08 results: 24 samples and 24 workers per card, "
                                    "lr 2.45e-4"},
}
# --profile: a window of PROFILE_STEPS training steps after PROFILE_WARMUP (start-up, the first batches and the
# allocator's growth are not what a step costs), recorded on rank 0 unless --profile-ranks says otherwise.
PROFILE_WARMUP = 5
PROFILE_STEPS = 5
# The synthetic set the smoke run trains on (generated on first use, at the smoke config's data_root);
# the smoke baselines were measured on exactly this set.
SMOKE_DATA = {"width": 352, "height": 198, "train_scenes": 12, "val_scenes": 3, "samples_per_scene": 8, "seed": 0}


@dataclass(frozen=True)
class ConfigDefaults:
    """The values of a config the launcher completes a request with."""

    samples_per_gpu: int
    workers_per_gpu: int
    max_epochs: int | None
    data_root: str
    lr: float | None


def read_config(flashocc: Path, config: str) -> ConfigDefaults:
    """Read a FlashOCC config with mmcv's Config (its _base_ files included); needs the kit's environment."""
    path = flashocc / config
    cfg = configfile.load(flashocc, config)
    data = cfg.get("data") or {}
    missing = [f"data.{key}" for key in ("samples_per_gpu", "workers_per_gpu") if key not in data]
    missing += ["data_root"] if "data_root" not in cfg else []
    if missing:
        raise KitError(f"{path} sets no {', '.join(missing)}: the launcher takes its defaults from the config")
    runner = cfg.get("runner") or {}
    optimizer = cfg.get("optimizer") or {}
    return ConfigDefaults(samples_per_gpu=int(data["samples_per_gpu"]), workers_per_gpu=int(data["workers_per_gpu"]),
                          max_epochs=runner.get("max_epochs"), data_root=str(cfg["data_root"]),
                          lr=optimizer.get("lr"))


@dataclass
class LaunchRequest:
    """The command line of `kit.py launch`, before defaults (None: not given)."""

    mode: str
    num_npu: int | None = None
    batch_size: int | None = None
    epochs: int | None = None
    max_iters: int | None = None
    precision: str = "fp32"
    data_root: str | None = None
    work_dir: str | None = None
    output_dir: str | None = None
    resume: str | None = None
    config: str | None = None
    workers: int | None = None
    log_interval: int | None = None
    smoke: bool = False
    lr: float | None = None
    preset: str | None = None
    stall_timeout: float | None = None
    node_timeout: float | None = None
    data_check: bool = True
    emulate_npu: bool = False
    profile: bool = False
    profile_steps: int | None = None
    profile_warmup: int | None = None
    profile_ranks: str | None = None  # "0" (default), "all", or "0,3"
    cfg_options: list[str] = field(default_factory=list)


@dataclass
class Run:
    mode: str
    flashocc: Path
    config: str
    devices: int
    batch_size: int
    epochs: int | None
    max_iters: int | None
    precision: str
    smoke: bool
    work_dir: Path
    output_dir: Path
    data_root: str  # as the infos are read: the config's unless --data-root
    resume: str | None
    log_interval: int
    workers: int | None = None
    data_root_given: bool = False
    cluster: Nodes = Nodes(1, 0, "127.0.0.1", 29500)  # this node among the run's (NNODES, NODE_RANK, MASTER_*)
    lr: float | None = None
    lr_rule: str = ""
    stall_timeout: float | None = None  # None: the stall watch's own rule
    node_timeout: float = 600.0  # how long the nodes' launchers wait for each other
    resume_from: Path | None = None  # the checkpoint `resume` resolved to (execute decides)
    data_check: bool = True  # the quick data check before torchrun
    emulate_npu: bool = False  # the NPU rehearsal: the kit's emulated NPU on this CPU
    profile: dict | None = None  # --profile: the StepProfilerHook's settings (wait, active, ranks)
    extra_cfg: list[str] = field(default_factory=list)

    @property
    def nodes(self) -> int:
        return self.cluster.count

    @property
    def global_batch(self) -> int:
        return self.nodes * self.devices * self.batch_size

    @property
    def accuracy(self) -> bool:
        return self.mode in ("full", "smoke")

    @property
    def case_name(self) -> str:
        kind = "acc" if self.accuracy else "perf"
        tag = "_fp16backbone" if self.precision == "fp16-backbone" else ""
        smoke = "_cpusmoke" if self.smoke else ""
        rehearsal = "_npurehearsal" if self.emulate_npu else ""
        return f"{NETWORK}{smoke}_bs{self.global_batch}_{self.nodes * self.devices}p_{kind}{tag}{rehearsal}"

    @property
    def data_dir(self) -> Path:
        root = Path(self.data_root)
        return root if root.is_absolute() else self.flashocc / root

    def cfg_options(self) -> list[str]:
        opts = [f"data.samples_per_gpu={self.batch_size}", f"log_config.interval={self.log_interval}"]
        if self.lr is not None:
            opts.append(f"optimizer.lr={self.lr!r}")
        if self.workers is not None:
            opts.append(f"data.workers_per_gpu={self.workers}")
        if self.precision == "fp16-backbone":
            opts.append("model.img_backbone_fp16=True")
        if self.max_iters is not None:  # bounded run: iterations, not epochs
            opts += ["runner.type=IterBasedRunner", f"runner.max_iters={self.max_iters}", "runner.max_epochs=None",
                     "checkpoint_config.by_epoch=False", f"checkpoint_config.interval={self.max_iters}"]
        else:
            opts.append(f"runner.max_epochs={self.epochs}")
        if self.data_root_given:
            root = self.data_root.rstrip("/") + "/"
            for split, infos in (("train", "train"), ("val", "val"), ("test", "val")):
                opts += [f"data.{split}.data_root={root}", f"data.{split}.ann_file={root}{info_file(infos)}"]
        return opts + self.extra_cfg


def locate_flashocc(workspace_flashocc: Path) -> Path:
    """The FlashOCC root: the current directory (scripts run from there), else the workspace's."""
    cwd = Path.cwd()
    if (cwd / "tools" / "train.py").is_file() and (cwd / "projects").is_dir():
        return cwd
    if (workspace_flashocc / "tools" / "train.py").is_file():
        print(f"note: not in a FlashOCC root; using {workspace_flashocc}", file=sys.stderr)
        return workspace_flashocc
    raise KitError(f"run this from the patched FlashOCC root (`cd FlashOCC`); {cwd} is not one and "
                   f"{workspace_flashocc} does not exist. Fix: `python3 tools/kit.py setup`.")


def round_significant(value: float, digits: int = LR_DIGITS) -> float:
    return float(f"{value:.{digits - 1}e}")


def learning_rate(config_lr: float | None, config_batch: int, default_devices: int, global_batch: int,
                  given: float | None) -> tuple[float | None, str]:
    """(lr, how it was chosen): --lr as given, else the config's scaled by sqrt(global batch / the config's)."""
    if given is not None:
        if not given > 0:
            raise KitError(f"--lr must be above 0, got {given}")
        return given, f"--lr {given:g}"
    if config_lr is None:
        return None, "the config's optimizer has no lr"
    base = config_batch * default_devices
    if global_batch == base:
        return config_lr, f"the config's {config_lr:g} (global batch {global_batch}, as the config is meant for)"
    lr = round_significant(config_lr * math.sqrt(global_batch / base))
    return lr, (f"the config's {config_lr:g} at global batch {base} x sqrt({global_batch} / {base}), "
                f"to {LR_DIGITS} digits")


def apply_preset(request: LaunchRequest) -> LaunchRequest:
    """The preset's values, under what the command line gives explicitly."""
    if request.preset is None:
        return request
    if request.preset not in PRESETS:
        raise KitError(f"--preset {request.preset}: choose from {', '.join(PRESETS)}")
    values = {k: v for k, v in PRESETS[request.preset].items() if k != "about"}
    return replace(request, **{k: v for k, v in values.items() if getattr(request, k) is None})


def profile_settings(request: LaunchRequest, run: Run) -> dict | None:
    """--profile and its window, checked against the run's length; None when not profiling."""
    if not (request.profile or request.profile_steps or request.profile_warmup is not None or request.profile_ranks):
        return None
    wait = PROFILE_WARMUP if request.profile_warmup is None else request.profile_warmup
    active = request.profile_steps or PROFILE_STEPS
    if run.max_iters is not None and run.max_iters < wait + active:
        raise KitError(f"--profile records {active} steps after {wait} warm-up steps, but the run has {run.max_iters} "
                       f"iterations. Fix: --max-iters {wait + active} or more, or a smaller --profile-steps / "
                       "--profile-warmup")
    text = request.profile_ranks or "0"
    if text == "all":
        ranks: object = "all"
    else:
        try:
            ranks = sorted({int(r) for r in text.split(",")})
        except ValueError:
            raise KitError(f"--profile-ranks {text}: give rank numbers separated by commas (0,3), or all") from None
        bad = [r for r in ranks if not 0 <= r < run.nodes * run.devices]
        if bad:
            raise KitError(f"--profile-ranks {text}: rank(s) {', '.join(map(str, bad))} are not in this run (ranks 0 "
                           f"to {run.nodes * run.devices - 1}). Fix: name ranks of the run, or all")
    return {"directory": str(run.work_dir / "profile"), "wait": wait, "active": active, "ranks": ranks}


def build_run(request: LaunchRequest, flashocc: Path, cluster: Nodes) -> Run:
    request = apply_preset(request)
    smoke = request.mode == "smoke" or request.smoke or smoke_requested()
    # the seed's interface: --epochs=N is an N-epoch performance run, no argument the accuracy run
    mode = {"seed": "perf" if request.epochs else "full"}.get(request.mode, request.mode)
    for name, value in (("--num-npu", request.num_npu), ("--batch-size", request.batch_size),
                        ("--epochs", request.epochs), ("--max-iters", request.max_iters),
                        ("--log-interval", request.log_interval)):
        if value is not None and value < 1:
            raise KitError(f"{name} must be at least 1, got {value}")
    if request.workers is not None and request.workers < 0:
        raise KitError(f"--workers must be 0 or more, got {request.workers}")
    if mode == "perf" and request.epochs and request.max_iters:
        raise KitError("give --epochs or --max-iters, not both")
    if mode != "perf" and request.max_iters:
        raise KitError(f"--max-iters is for performance runs; `{request.mode}` trains --epochs epochs")
    config = request.config or (SMOKE_CONFIG if smoke else CONFIG)
    if not (flashocc / config).is_file():
        raise KitError(f"config {config} not found under {flashocc}: are the kit's patches applied? "
                       "(`python3 tools/kit.py status`)")
    defaults = read_config(flashocc, config)
    if mode == "perf":
        epochs, max_iters = request.epochs, None if request.epochs else (request.max_iters or MAX_ITERS)
    else:
        epochs, max_iters = request.epochs or defaults.max_epochs, None
        if epochs is None:
            raise KitError(f"{config} trains by iterations (no runner.max_epochs): give --epochs")
    default_devices = SMOKE_DEVICES if smoke else DEVICES
    run = Run(mode=mode, flashocc=flashocc, config=config,
              devices=request.num_npu or default_devices, cluster=cluster,
              batch_size=request.batch_size or defaults.samples_per_gpu, epochs=epochs, max_iters=max_iters,
              precision=request.precision, smoke=smoke, work_dir=Path(), output_dir=Path(),
              data_root=request.data_root or defaults.data_root, data_root_given=request.data_root is not None,
              resume=request.resume, log_interval=request.log_interval or (1 if mode == "perf" else 5 if smoke else 10),
              workers=request.workers, extra_cfg=list(request.cfg_options))
    for name, value in (("--stall-timeout", request.stall_timeout), ("--node-timeout", request.node_timeout)):
        if value is not None and not value > 0:
            raise KitError(f"{name} must be above 0 seconds, got {value}")
    run.stall_timeout = request.stall_timeout
    run.data_check = request.data_check
    run.emulate_npu = request.emulate_npu
    run.node_timeout = request.node_timeout or run.node_timeout
    run.lr, run.lr_rule = learning_rate(defaults.lr, defaults.samples_per_gpu, default_devices, run.global_batch,
                                        request.lr)
    run.work_dir = Path(request.work_dir or flashocc / WORK_DIRS / run.case_name).resolve()
    run.output_dir = Path(request.output_dir or flashocc / OUTPUT_DIR / run.case_name).resolve()
    run.profile = profile_settings(request, run)
    return run
