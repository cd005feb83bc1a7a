"""The default seccomp profile (pure data → OCI `linux.seccomp`).

A deny list rather than Docker's allow list: everything is allowed except the syscalls that let a
container reach past its namespaces (mounting, module loading, kexec, bpf, keyrings, ptrace, clock and
swap changes, namespace creation/joining, …). As in Docker, a group is lifted when the container holds
the capability that the group needs anyway (e.g. `--cap-add SYS_ADMIN` allows mount and unshare), and
`clone3` answers ENOSYS so libcs fall back to `clone`, whose namespace flags can be filtered.
"""

from __future__ import annotations

from typing import Any

EPERM = 1
ENOSYS = 38

# capability that lifts the group (None: never lifted by a capability) → syscalls denied with EPERM
DENIED: tuple[tuple[str | None, tuple[str, ...]], ...] = (
    (
        "CAP_SYS_ADMIN",
        (
            "mount", "umount", "umount2", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount",
            "fspick", "mount_setattr", "pivot_root", "unshare", "setns", "quotactl", "quotactl_fd",
            "lookup_dcookie", "bpf", "perf_event_open", "fanotify_init", "name_to_handle_at",
            "open_by_handle_at", "syslog", "vm86", "vm86old", "nfsservctl",
        ),
    ),
    ("CAP_SYS_MODULE", ("init_module", "finit_module", "delete_module", "create_module", "query_module")),
    ("CAP_SYS_BOOT", ("reboot", "kexec_load", "kexec_file_load")),
    ("CAP_SYS_PTRACE", ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd")),
    (
        "CAP_SYS_TIME",
        ("settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime"),
    ),
    ("CAP_SYS_PACCT", ("acct",)),
    ("CAP_SYS_RAWIO", ("iopl", "ioperm")),
    ("CAP_SYS_NICE", ("set_mempolicy", "mbind", "move_pages", "migrate_pages")),
    (
        None,
        (
            "add_key", "keyctl", "request_key", "swapon", "swapoff", "uselib", "userfaultfd", "ustat",
            "sysfs", "_sysctl", "get_kernel_syms", "io_uring_setup",
            "io_uring_enter", "io_uring_register",
        ),
    ),
)  # fmt: skip

# clone(2) flags that create namespaces; denied unless CAP_SYS_ADMIN is held.
CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

ARCHITECTURES = {
    "amd64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "arm64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "386": ["SCMP_ARCH_X86"],
    "arm": ["SCMP_ARCH_ARM"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
}


def default_profile(arch: str, capabilities: frozenset[str]) -> dict[str, Any]:
    """The OCI seccomp object for a container holding `capabilities` (full names, CAP_*)."""
    denied: list[str] = []
    for cap, names in DENIED:
        if cap is None or cap not in capabilities:
            denied.extend(names)
    syscalls: list[dict[str, Any]] = [
        {"names": sorted(denied), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]
    if "CAP_SYS_ADMIN" not in capabilities:
        # s390x passes the flags in the second argument; every other arch in the first
        index = 1 if arch == "s390x" else 0
        for flag in CLONE_NAMESPACE_FLAGS:
            syscalls.append(
                {
                    "names": ["clone"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": EPERM,
                    "args": [{"index": index, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
                }
            )
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHITECTURES.get(arch, []),
        "syscalls": syscalls,
    }
