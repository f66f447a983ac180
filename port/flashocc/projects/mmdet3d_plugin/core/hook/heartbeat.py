# Copyright (c) FlashOCC Ascend porting kit. All rights reserved.
"""Where each rank is, for the porting kit's stall watch.

Each rank writes `rank<RANK>.json` in `directory` at the start and end of every
training iteration and epoch: its epoch, iteration (counted from 1, as mmcv's
log lines count: the one in progress, or just done), phase and the time, with
the host and the launch it belongs to (FLASHOCC_LAUNCH_ID, set by the kit's
launcher), so that the launcher never takes another run's file for its own.
The launcher that watches the run (the kit's `kit.py launch --stall-timeout`)
ends it when a rank's file stops changing, and names that rank and where it
was. Written atomically (a temporary file renamed), so a reader never sees
half a file; costs one small write per iteration.
"""
import json
import os
import socket
import time

from mmcv.runner import HOOKS, Hook


@HOOKS.register_module()
class RankHeartbeatHook(Hook):

    def __init__(self, directory):
        self.directory = directory
        self.rank = int(os.environ.get('RANK', 0))
        self.host = socket.gethostname()
        self.launch = os.environ.get('FLASHOCC_LAUNCH_ID')

    def _beat(self, runner, phase):
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f'rank{self.rank}.json')
        record = dict(rank=self.rank, local_rank=int(os.environ.get('LOCAL_RANK', 0)),
                      pid=os.getpid(), host=self.host, launch=self.launch,
                      epoch=runner.epoch + 1, iter=runner.iter + 1,
                      inner_iter=getattr(runner, 'inner_iter', 0), phase=phase,
                      time=time.time())
        temporary = f'{path}.{os.getpid()}.tmp'
        with open(temporary, 'w') as fh:
            json.dump(record, fh)
        os.replace(temporary, path)

    def before_run(self, runner):
        self._beat(runner, 'started')

    def before_train_epoch(self, runner):
        self._beat(runner, 'train')

    def before_train_iter(self, runner):
        self._beat(runner, 'train')

    def after_train_iter(self, runner):
        self._beat(runner, 'train')

    def after_train_epoch(self, runner):
        # what follows (checkpoint, validation) is watched through the output
        self._beat(runner, 'after epoch')

    def after_run(self, runner):
        self._beat(runner, 'finished')
