"""Run a program unable to open netlink sockets: `python nonetlink.py PROGRAM [ARGS...]`.

Chromium watches the machine's interfaces over netlink (NETLINK_ROUTE) and, on every address change,
fails every request in flight with `net::ERR_NETWORK_CHANGED`, loopback ones included. The suite adds an
address to a veth for every sandboxed instance it starts and Docker adds veths for every container, so a
Gradio page (~100 assets) loaded during a three-worker run was cut several times over (stop 34's CI: the
OAuth app never rendered, ten reloads later). A browser on a visitor's own machine never sees the server's
interfaces change. Under this filter Chromium's address tracker cannot start, logs it and treats the
machine as online for good, which is what a visitor's browser sees.

A seccomp filter (inherited across exec and by every child process) makes `socket(AF_NETLINK, ...)` fail
with EACCES; every other system call, and every other socket family, is untouched. Standard library
only: this file runs as a script, outside the test package.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys

AUDIT_ARCH_X86_64 = 0xC000003E
SYS_SOCKET_X86_64 = 41
AF_NETLINK = 16
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
NR, ARCH, ARG0 = 0, 4, 16  # offsets in struct seccomp_data (args[0]'s low word on little-endian)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def program() -> bytes:
    """Classic BPF: on x86_64, socket(AF_NETLINK, ...) -> EACCES; everything else allowed."""
    steps = [
        (LD_W_ABS, 0, 0, ARCH),
        (JEQ_K, 0, 5, AUDIT_ARCH_X86_64),  # another ABI: allow (index 7)
        (LD_W_ABS, 0, 0, NR),
        (JEQ_K, 0, 3, SYS_SOCKET_X86_64),
        (LD_W_ABS, 0, 0, ARG0),
        (JEQ_K, 0, 1, AF_NETLINK),
        (RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EACCES),
        (RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    return b"".join(struct.pack("=HBBI", *step) for step in steps)


def deny_netlink() -> None:
    """Install the filter on this process (and so on everything it execs)."""
    libc = ctypes.CDLL(None, use_errno=True)
    code = ctypes.create_string_buffer(program())
    prog = SockFprog(len(code.raw) // 8, ctypes.addressof(code))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main(argv: list[str]) -> None:
    if platform.machine() != "x86_64":
        raise SystemExit(f"nonetlink: only x86_64 is filtered, this is {platform.machine()}")
    deny_netlink()
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
