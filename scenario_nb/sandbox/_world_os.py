"""What the world server needs from the operating system, on POSIX and on Windows: an exclusive lock on a
file that ends with its process (even a killed one), and whether a process still runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO


if sys.platform == "win32":
    import ctypes
    import msvcrt

    def try_lock(handle: IO) -> bool:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def unlock(handle: IO) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

    def pid_alive(pid: int) -> bool:
        """os.kill(pid, 0) would end the process on Windows: ask for its exit code instead."""
        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE

else:
    import fcntl

    def try_lock(handle: IO) -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unlock(handle: IO) -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)

    def pid_alive(pid: int) -> bool:
        """The process runs (a zombie, ended but not yet reaped by the kernel that started it, does not)."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True  # no /proc (macOS): the signal's answer is all there is
