"""The NPU driver's answer to DrivingSDK's chip query: dsmi_get_chip_info for device 0, as mx_driving asks it.

Usage: python -m flashocc_kit.probes.dsmi_chip /path/to/libdrvdsmi_host.so
Prints {"status": <the call's return code>, "type": "Ascend", "name": "910B3", "version": "V1"}.
Run in a child process by flashocc_kit.chip: a driver that hangs or crashes takes this process, not the kit.
"""

import ctypes
import json
import sys


class ChipInfo(ctypes.Structure):
    """struct dsmi_chip_info_stru of the driver's dsmi_common_interface.h (mx_driving/get_chip_info.py's `Chip`)."""

    _fields_ = [("chip_type", ctypes.c_char * 32), ("chip_name", ctypes.c_char * 32),
                ("chip_version", ctypes.c_char * 32)]


info = ChipInfo()
status = ctypes.CDLL(sys.argv[1]).dsmi_get_chip_info(0, ctypes.byref(info))
print(json.dumps({"status": status, "type": info.chip_type.decode(errors="replace"),
                  "name": info.chip_name.decode(errors="replace"),
                  "version": info.chip_version.decode(errors="replace")}))
