"""Measures the emulation's overhead: ResNet-50 forward+backward on the emulated npu against the CPU.

Run with the emulation on (``FLASHOCC_EMULATE_NPU=1``, tools/ on PYTHONPATH)::

    python -m npu_emulator.bench [--batch 2] [--size 256 704] [--steps 3] [--autocast]

Both devices run in this process, alternately, on the same weights and input; the ratio npu/cpu
is the fallback's cost (boxing, re-wrapping, adopting outputs), since both run the same CPU kernels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m npu_emulator.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 704), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--autocast", action="store_true", help="float16 autocast on the npu (the CPU stays fp32)")
    args = parser.parse_args(argv)

    import torch
    import torch_npu  # noqa: F401  (the emulated one: FLASHOCC_EMULATE_NPU=1)
    import torchvision

    torch.manual_seed(0)
    models = {"cpu": torchvision.models.resnet50()}
    models["npu"] = torchvision.models.resnet50().npu()
    models["npu"].load_state_dict(models["cpu"].state_dict())
    inputs = {"cpu": torch.randn(args.batch, 3, *args.size)}
    inputs["npu"] = inputs["cpu"].npu()

    def step(device: str) -> float:
        model = models[device]
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        with torch.autocast("npu", dtype=torch.float16, enabled=args.autocast and device == "npu"):
            out = model(inputs[device])
        out.float().sum().backward()
        return time.perf_counter() - started

    times: dict = {"cpu": [], "npu": []}
    for device in ("cpu", "npu"):  # warm-up
        step(device)
    for _ in range(args.steps):
        for device in ("cpu", "npu"):
            times[device].append(step(device))
    result = {device: round(statistics.median(t), 3) for device, t in times.items()}
    result["ratio_npu_over_cpu"] = round(result["npu"] / result["cpu"], 3)
    result.update(batch=args.batch, size=list(args.size), steps=args.steps, autocast=args.autocast,
                  torch=torch.__version__, threads=torch.get_num_threads())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
