"""The C library of this process, loaded once for the few calls Python's os module lacks.

`ctypes.util.find_library` runs `ldconfig -p` (a child process, a few ms) on every call, which was on
every container start's path; the process's own symbol table already holds libc.
"""

from __future__ import annotations

import ctypes

LIBC = ctypes.CDLL(None, use_errno=True)
