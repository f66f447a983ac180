"""torch_npu's error codes, as DrivingSDK's patcher imports them (``ErrCode``, ``pta_error``)."""

import os
import time
from enum import Enum


class _SubModuleID(Enum):
    PTA = 0
    OPS = 1
    DIST = 2
    GRAPH = 3
    PROF = 4
    UNKNOWN = 99


class ErrCode(Enum):
    SUCCESS = (0, "success")
    PARAM = (1, "invalid parameter")
    TYPE = (2, "invalid type")
    VALUE = (3, "invalid value")
    PTR = (4, "invalid pointer")
    INTERNAL = (5, "internal error")
    MEMORY = (6, "memory error")
    NOT_SUPPORT = (7, "feature not supported")
    NOT_FOUND = (8, "resource not found")
    UNAVAIL = (9, "resource unavailable")
    SYSCALL = (10, "system call failed")
    TIMEOUT = (11, "timeout error")
    PERMISSION = (12, "permission error")
    ACL = (100, "call acl api failed")
    HCCL = (200, "call hccl api failed")
    GE = (300, "call ge api failed")
    EXCEPT = (999, "application exception")

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def msg(self) -> str:
        return self.value[1]


def _format(submodule: _SubModuleID, error: ErrCode) -> str:
    stamp = time.strftime("%Y-%m-%d-%H:%M:%S", time.localtime())
    return (f"\n[ERROR] {stamp} (PID:{os.getpid()}, Device:-1, RankID:-1) "
            f"ERR{submodule.value:02d}{error.code:03d} {submodule.name} {error.msg}")


def pta_error(error: ErrCode) -> str:
    return _format(_SubModuleID.PTA, error)


def ops_error(error: ErrCode) -> str:
    return _format(_SubModuleID.OPS, error)


def dist_error(error: ErrCode) -> str:
    return _format(_SubModuleID.DIST, error)


def graph_error(error: ErrCode) -> str:
    return _format(_SubModuleID.GRAPH, error)


def prof_error(error: ErrCode) -> str:
    return _format(_SubModuleID.PROF, error)
