# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""Where a training step's time goes, for the porting kit's ``--profile``.

With FLASHOCC_PROFILE set (the kit's launcher sets it: JSON with ``dir``,
``wait``, ``active`` and ``ranks``), tools/train.py adds StepProfilerHook. On
the chosen ranks it records ``active`` steps after ``wait`` warm-up steps with
the device's profiler -- torch_npu.profiler on the NPU (its trace opens in
MindStudio Insight), torch.profiler elsewhere (TensorBoard, Perfetto) -- into
``dir``, and writes ``dir/profile_rank<R>.json``: for each recorded step its
data wait (mmcv's data_time), forward (train_step), backward and optimizer
time, measured here with the device synchronized at each boundary while
recording, and the operators with the most self time over the window.
Outside the window it costs nothing but a counter.
"""
import csv
import glob
import json
import os
import time
from contextlib import contextmanager

import torch
from mmcv.runner import HOOKS, Hook, OptimizerHook

TOP_OPERATORS = 15
PHASES = ('data', 'forward', 'backward', 'optimizer')


@HOOKS.register_module()
class StepProfilerHook(Hook):

    def __init__(self, directory, wait=5, active=5, ranks=(0,)):
        self.directory = directory
        self.wait, self.active = int(wait), int(active)
        self.rank = int(os.environ.get('RANK', 0))
        self.enabled = ranks == 'all' or self.rank in ranks
        self.iteration = -1  # training iterations begun in this run
        self.steps = []  # one dict of phase seconds per recorded step
        self.current = None
        self.started = None
        self.top = []
        self.profiler = None

    # -- which profiler, and the device's clock ----------------------------------------------------------------
    def _profiler_module(self, device):
        if device == 'npu':
            import torch_npu
            module = torch_npu.profiler
            return module, [module.ProfilerActivity.CPU, module.ProfilerActivity.NPU]
        module = torch.profiler
        activities = [module.ProfilerActivity.CPU]
        if device == 'cuda':
            activities.append(module.ProfilerActivity.CUDA)
        return module, activities

    def _sync(self):
        if self.device == 'npu':
            torch.npu.synchronize()
        elif self.device == 'cuda':
            torch.cuda.synchronize()

    @contextmanager
    def _timed(self, phase):
        """Time a phase of a recorded step (the device drained at both ends), and name it in the trace."""
        if self.current is None:
            yield
            return
        self._sync()
        started = time.perf_counter()
        with torch.profiler.record_function(f'flashocc::{phase}'):
            yield
        self._sync()
        self.current[phase] = self.current.get(phase, 0.0) + time.perf_counter() - started

    # -- mmcv's hook points --------------------------------------------------------------------------------------
    def before_run(self, runner):
        if not self.enabled:
            return
        from projects import device
        self.device = device.device_type()
        self.module, activities = self._profiler_module(self.device)
        self.profiler_name = self.module.__name__
        os.makedirs(self.directory, exist_ok=True)
        self._wrap(runner)
        schedule = self.module.schedule(wait=self.wait, warmup=1, active=self.active, repeat=1)
        self.profiler = self.module.profile(activities=activities, schedule=schedule,
                                            on_trace_ready=self._trace_ready)
        self.profiler.start()

    def _wrap(self, runner):
        """Time train_step (forward and losses), each OptimizerHook (backward, clipping, step) and the step itself."""
        train_step = runner.model.train_step

        def timed_train_step(*args, **kwargs):
            with self._timed('forward'):
                return train_step(*args, **kwargs)
        runner.model.train_step = timed_train_step
        for hook in runner.hooks:
            if isinstance(hook, OptimizerHook):
                after = hook.after_train_iter

                def timed_after(runner, after=after):
                    with self._timed('backward'):  # the optimizer's share is taken out below
                        after(runner)
                hook.after_train_iter = timed_after
        step = runner.optimizer.step

        def timed_step(*args, **kwargs):
            with self._timed('optimizer'):
                return step(*args, **kwargs)
        runner.optimizer.step = timed_step

    def before_train_iter(self, runner):
        if not self.enabled or self.profiler is None:
            return
        self._close_step()
        self.iteration += 1
        self.profiler.step()  # torch's schedule: iteration k runs as profiler step k + 1
        recording = self.wait <= self.iteration < self.wait + self.active
        self.current = {} if recording else None
        self.started = time.perf_counter()

    def after_train_iter(self, runner):
        if self.current is not None:  # IterTimerHook put this step's data wait in the log buffer
            history = runner.log_buffer.val_history.get('data_time') or [0.0]
            self.current['data'] = float(history[-1])

    def after_run(self, runner):
        if self.profiler is None:
            return
        self._close_step()
        self.current = None
        self.profiler.stop()  # a window cut short by the end of training is written as far as it got
        self.profiler = None
        self._write()

    def _close_step(self):
        if self.current is None:
            return
        step = dict(self.current)
        # from this step's start to the next's: its compute, the other hooks, and the next batch's wait
        step['step'] = time.perf_counter() - self.started
        step['backward'] = max(0.0, step.get('backward', 0.0) - step.get('optimizer', 0.0))
        self.steps.append(step)
        self.current = None

    # -- the outputs ---------------------------------------------------------------------------------------------
    def _trace_ready(self, prof):
        self.module.tensorboard_trace_handler(self.directory)(prof)
        self.top = self._top_operators(prof)

    def _top_operators(self, prof):
        """(name, self ms in the window, calls) of the operators with the most self time on the device's clock."""
        if hasattr(prof, 'key_averages'):  # torch.profiler (and the kit's emulated NPU)
            device_time = 'self_cuda_time_total' if self.device == 'cuda' else 'self_cpu_time_total'
            rows = [(e.key, getattr(e, device_time) / 1000.0, e.count) for e in prof.key_averages()
                    if not e.key.startswith(('ProfilerStep', 'flashocc::'))]
        else:  # torch_npu.profiler: its analysis writes operator_details.csv
            rows = self._npu_operator_details()
        return sorted(rows, key=lambda row: -row[1])[:TOP_OPERATORS]

    def _npu_operator_details(self):
        found = sorted(glob.glob(os.path.join(self.directory, '*_ascend_pt', 'ASCEND_PROFILER_OUTPUT',
                                              'operator_details.csv')), key=os.path.getmtime)
        if not found:
            return []
        totals = {}
        with open(found[-1], newline='') as fh:
            for row in csv.DictReader(fh):
                name = row.get('Name', '?')
                milliseconds = float(row.get('Device Self Duration(us)') or 0) / 1000.0
                before = totals.get(name, (0.0, 0))
                totals[name] = (before[0] + milliseconds, before[1] + 1)
        return [(name, ms, count) for name, (ms, count) in totals.items()]

    def _write(self):
        recorded = len(self.steps)
        mean = {phase: sum(s.get(phase, 0.0) for s in self.steps) / max(recorded, 1)
                for phase in (*PHASES, 'step')}
        record = dict(rank=self.rank, device=self.device, profiler=self.profiler_name, wait=self.wait,
                      active=self.active, recorded_steps=recorded, steps=self.steps,
                      mean_seconds=mean if recorded else None,
                      top_operators=[dict(name=name, self_ms_per_step=ms / max(recorded, 1),
                                          calls_per_step=calls / max(recorded, 1)) for name, ms, calls in self.top],
                      trace_dir=self.directory)
        with open(os.path.join(self.directory, f'profile_rank{self.rank}.json'), 'w') as fh:
            json.dump(record, fh, indent=1)
