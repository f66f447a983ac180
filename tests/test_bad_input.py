"""Bad input gets one sentence naming the value and the fix, and exit status 2: never a traceback.

Every `kit.py` command and launch option, and each environment variable the kit reads, with a malformed value or
a missing file. Each case runs the real command line in a fresh process, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KIT_ROOT

KIT = [sys.executable, str(KIT_ROOT / "tools" / "kit.py")]
MISSING = "/nonexistent/flashocc-kit-test"

# (command line after kit.py, extra environment, what the message must name)
CASES = [
    (["status"], {"FLASHOCC_KIT_PINS": MISSING}, MISSING),
    (["stacks"], {"FLASHOCC_KIT_PINS": "{broken}"}, "{broken}"),
    (["sources", "--from", MISSING], {}, MISSING),
    (["sources", "nosuchproject"], {}, "nosuchproject"),
    (["apply", "nosuchproject"], {}, "nosuchproject"),
    (["export", "nosuchproject"], {}, "nosuchproject"),
    (["export", "flashocc", "--into", "no-such-patch"], {}, "no-such-patch"),
    (["series", "nosuchproject"], {}, "nosuchproject"),
    (["series", "import", "nosuchproject"], {}, "nosuchproject"),
    (["series", "import", "flashocc", "mmcv"], {}, "name one project"),
    (["series", "export", "--bogus"], {}, "--bogus"),
    (["setup", "--stack", "torch9.9"], {}, "torch9.9"),
    (["setup", "--drivingsdk", MISSING], {}, MISSING),
    (["setup", "--chip", "a9"], {}, "a9"),
    (["setup", "--venv", "/proc/version"], {}, "/proc/version"),
    (["doctor", "--venv", MISSING], {}, MISSING),
    (["test", "--stack", "torch9.9"], {}, "torch9.9"),
    (["synth", "--image-size", "12"], {}, "12"),
    (["synth", "--image-size", "0x0"], {}, "0x0"),
    (["synth", "--train-scenes", "0"], {}, "--train-scenes"),
    (["synth", "--out", "/proc/version"], {}, "/proc/version"),
    (["check-data", "--data-root", MISSING], {}, MISSING),
    (["check-data", "--sample", "-3"], {}, "-3"),
    (["summarize", "--work-dir", MISSING, "--case-name", "x"], {}, MISSING),
    (["gate", "--summary", MISSING], {}, MISSING),
    (["gate", "--summary", "{not-json}"], {}, "not readable JSON"),
    (["gate", "--summary", "{summary}", "--baselines", MISSING], {}, MISSING),
    (["gate", "--summary", "{summary}", "--step-time-tolerance", "-1"], {}, "-1"),
    (["contract", MISSING], {}, MISSING),
    (["bench", "bevpool", "--batch", "0"], {}, "--batch"),
    (["bench", "rays", "--samples", "0"], {}, "--samples"),
    (["launch", "perf", "--num-npu", "0"], {}, "--num-npu"),
    (["launch", "perf", "--workers", "-1"], {}, "--workers"),
    (["launch", "perf", "--stall-timeout", "-5"], {}, "--stall-timeout"),
    (["launch", "perf", "--node-timeout", "0"], {}, "--node-timeout"),
    (["launch", "perf", "--resume", MISSING, "--dry-run"], {}, MISSING),
    (["launch", "perf", "--config", "projects/configs/nope.py"], {}, "projects/configs/nope.py"),
    (["launch", "perf", "--lr", "-1"], {}, "--lr"),
    (["launch", "perf", "--dry-run"], {"NNODES": "two"}, "NNODES=two"),
    (["launch", "perf", "--dry-run"], {"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "10.0.0.1"}, "NODE_RANK=2"),
    (["launch", "perf", "--dry-run"], {"NODE_RANK": "x"}, "NODE_RANK=x"),
    (["launch", "perf", "--dry-run"], {"MASTER_PORT": "http"}, "MASTER_PORT=http"),
    (["launch", "perf", "--dry-run"], {"MASTER_PORT": "70000"}, "MASTER_PORT=70000"),
    (["launch", "perf", "--dry-run"], {"MASTER_PORT": "65535"}, "MASTER_PORT=65535"),  # the nodes meet at + 1
    (["launch", "perf", "--dry-run"], {"MASTER_PORT": "0"}, "MASTER_PORT=0"),
    (["launch", "perf", "--dry-run"], {"NNODES": "2", "NODE_RANK": "1"}, "MASTER_ADDR"),
    (["launch", "perf", "--dry-run"], {"FLASHOCC_DEVICE": "tpu"}, "FLASHOCC_DEVICE=tpu"),
    (["launch", "perf", "--dry-run"], {"FLASHOCC_SMOKE": "yes"}, "FLASHOCC_SMOKE=yes"),
    (["launch", "perf", "--dry-run"], {"FLASHOCC_TORCHRUN": MISSING}, MISSING),
    (["status"], {"FLASHOCC_KIT_WORKSPACE": MISSING}, MISSING),
    (["sources"], {"FLASHOCC_KIT_SOURCES": MISSING, "FLASHOCC_KIT_WORKSPACE": "{empty}"}, MISSING),
    (["setup"], {"FLASHOCC_KIT_SOURCES": MISSING, "FLASHOCC_KIT_WORKSPACE": "{empty}"}, MISSING),
]


def case_id(case: tuple) -> str:
    args, env, _ = case
    return " ".join([*(f"{k}={v}" for k, v in env.items()), *args])[:80]


@pytest.mark.parametrize("args, env, named", CASES, ids=[case_id(c) for c in CASES])
def test_bad_input_is_one_sentence_and_exit_2(tmp_path, args, env, named):
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"case_name": "x", "device": "cpu", "precision": "fp32", "global_batch": 4,
                                   "rank_size": 2, "training_time_s": 1.0}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "pins.ini").write_text("[project:flashocc\nthis is not ini\n")
    (tmp_path / "empty").mkdir()
    fill = {"{summary}": str(summary), "{not-json}": str(tmp_path / "broken.json"),
            "{broken}": str(tmp_path / "pins.ini"), "{empty}": str(tmp_path / "empty")}
    args = [fill.get(a, a) for a in args]
    env = {k: fill.get(v, v) for k, v in env.items()}
    named = fill.get(named, named)
    full_env = {k: v for k, v in os.environ.items() if k not in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT",
                                                                  "FLASHOCC_SMOKE", "FLASHOCC_DEVICE")}
    cwd = KIT_ROOT / "FlashOCC" if (KIT_ROOT / "FlashOCC" / "tools" / "train.py").is_file() else KIT_ROOT
    proc = subprocess.run([*KIT, *args], cwd=cwd, env={**full_env, **env}, capture_output=True, text=True,
                          timeout=300)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output[-3000:]
    assert proc.returncode == 2, f"exit {proc.returncode}\n{output[-3000:]}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:") or ": error:" in line]
    assert errors, proc.stderr[-2000:]
    assert named in proc.stderr, proc.stderr[-2000:]
    assert not Path(MISSING).exists()


def test_the_ci_test_command_fails_at_once_where_the_sources_are_withheld(tmp_path):
    """What .ci/run runs, on a machine where neither GitHub nor a sources directory gives the upstream projects."""
    env = {k: v for k, v in os.environ.items() if k != "FLASHOCC_KIT_SOURCES"}
    env.update({"FLASHOCC_KIT_CACHE": str(tmp_path / "cache"), "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.file://{MISSING}/.insteadOf",
                "GIT_CONFIG_VALUE_0": "https://github.com/"})  # no GitHub: every clone fails at once
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    proc = subprocess.run([*KIT, "--workspace", str(workspace), "test", "--require-sources"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "--require-sources: the tests that need the upstream sources cannot run here" in proc.stderr
    assert "Traceback" not in proc.stderr and not (workspace / ".venvs").exists()  # stopped before any install
