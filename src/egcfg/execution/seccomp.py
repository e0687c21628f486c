"""The syscall filter every sandboxed run gets: the kernel interfaces that local privilege escalations
go through, closed with EPERM before any model-written code runs.

The filter is compiled here, in egcfg's process, with **libseccomp** (through its ctypes binding
``pyseccomp``) into a classic BPF program; the tracer installs that program on itself with
``prctl(PR_SET_SECCOMP)`` (after ``PR_SET_NO_NEW_PRIVS``), in both isolation modes, right after its
resource limits and the drop to the sandbox user, and before it reads the job. A filter cannot be
removed or loosened once installed, and every process the program starts inherits it. The tracer
needs nothing but the standard library for that (``ctypes``), so the interpreter that runs as
uid 65534 does not need egcfg's packages.

What is blocked follows Docker's default profile and Flatpak's filter (the anchors of the
container world), restricted to what a test run of a Python function never needs; see ``BLOCKED``
(also shown by ``egcfg doctor`` and listed in the README's security model). Everything else is
allowed, so ordinary programs (threads, ``subprocess``, ``multiprocessing`` over pipes and Unix
sockets) run as before. Syscalls of a foreign ABI (i386 ``int 0x80``, x32 on x86-64) kill the
process: libseccomp's default for architectures the filter was not built for.
"""

from __future__ import annotations

import errno
import functools
import tempfile

from ..errors import EgcfgError

# Namespace flags of clone(2)'s first argument (x86-64, arm64 and most ABIs). CLONE_NEWTIME has no
# bit of its own there (it collides with the exit signal): it is reachable through unshare/clone3 only,
# both blocked below.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET)
AF_UNIX = 1
TIOCSTI, TIOCLINUX = 0x5412, 0x541C

# (syscalls, what they are refused for): every one fails with EPERM. Grouped as in the README.
BLOCKED: tuple[tuple[tuple[str, ...], str], ...] = (
    (("unshare", "setns"), "new or foreign namespaces: a nested user namespace gives a root with "
                           "capabilities over fresh mount and network namespaces (the start of many kernel exploits)"),
    (("clone",), "only with a namespace flag (CLONE_NEWUSER, NEWNS, NEWNET, NEWPID, NEWIPC, NEWUTS, NEWCGROUP); "
                 "plain fork and threads are allowed"),
    (("clone3",), "fails with ENOSYS instead, so the C library falls back to clone, whose flags the filter can read"),
    (("io_uring_setup", "io_uring_enter", "io_uring_register"),
     "io_uring: a second syscall interface that seccomp cannot see into, and a frequent source of kernel bugs"),
    (("keyctl", "add_key", "request_key"), "the kernel keyring: not namespaced"),
    (("bpf",), "eBPF programs and maps"),
    (("perf_event_open",), "performance counters: kernel pointers and side channels"),
    (("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp"),
     "reading or controlling other processes (the tracer's own tracing is sys.settrace, not ptrace)"),
    (("mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
      "open_tree", "mount_setattr"), "changing the file-system view (old and new mount API)"),
    (("open_by_handle_at", "name_to_handle_at"), "file handles: opening files by inode past the mount view"),
    (("kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module"),
     "loading kernels and kernel modules"),
    (("userfaultfd",), "user page-fault handling: stalls the kernel at chosen points (exploit timing)"),
    (("personality",), "every change (only the query answers): no READ_IMPLIES_EXEC, no disabled "
                       "address-space randomization for what the program executes"),
    (("shmget", "semget", "msgget", "mq_open"),
     "System V and POSIX IPC objects: they outlive the process that made them, so runs served one "
     "after another by one fork server would share them (nothing in the standard library uses them)"),
    (("socket",), "every family but AF_UNIX: no network in either mode (bubblewrap also has no network "
                  "namespace interfaces; the rlimits fallback has none other)"),
    (("ioctl",), "only TIOCSTI and TIOCLINUX: typing into a terminal"),
    (("swapon", "swapoff", "reboot", "syslog", "acct", "quotactl", "lookup_dcookie", "iopl", "ioperm",
      "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "nfsservctl", "uselib", "vhangup",
      "fanotify_init", "mbind", "migrate_pages", "move_pages", "set_mempolicy"),
     "system administration and NUMA control, as Docker's profile"),
)


def blocked_syscalls() -> list[str]:
    return [name for names, _ in BLOCKED for name in names]


class FilterUnavailable(EgcfgError):
    """libseccomp cannot be used here, so no run can be filtered (and egcfg refuses to run any)."""


@functools.lru_cache(maxsize=1)
def filter_program() -> bytes:
    """The compiled BPF program (``struct sock_filter`` array) for this machine's native ABI."""
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError, OSError) as exc:  # the binding is there but libseccomp.so is not
        raise FilterUnavailable(f"libseccomp is needed for the sandbox's syscall filter ({exc}); install "
                                f"the Debian package libseccomp2 and the Python package pyseccomp") from None
    eperm = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    try:
        for names, _ in BLOCKED:
            for name in names:
                if name == "clone":
                    for flag in NAMESPACE_FLAGS:  # rules of one syscall are OR'ed: any flag set refuses
                        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
                elif name == "clone3":
                    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
                elif name == "personality":
                    # Any change refused; only the query (low 32 bits all ones: the kernel reads an
                    # unsigned int, and callers sign- or zero-extend it) answers. libseccomp has no
                    # "not equal under a mask" and cannot allow values under an ALLOW default, so:
                    # refuse when bit 31 is clear, or when it is set and any other low bit is clear.
                    f.add_rule(eperm, "personality", sc.Arg(0, sc.MASKED_EQ, 0x80000000, 0))
                    for bit in range(31):
                        f.add_rule(eperm, "personality", sc.Arg(0, sc.MASKED_EQ, (1 << bit) | 0x80000000, 0x80000000))
                elif name == "socket":
                    f.add_rule(eperm, "socket", sc.Arg(0, sc.NE, AF_UNIX))
                elif name == "ioctl":
                    for request in (TIOCSTI, TIOCLINUX):
                        f.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
                else:
                    f.add_rule(eperm, name)
        with tempfile.TemporaryFile() as out:
            f.export_bpf(out)
            out.seek(0)
            program = out.read()
    except OSError as exc:
        raise FilterUnavailable(f"libseccomp could not build the syscall filter: {exc}") from None
    if not program or len(program) % 8:
        raise FilterUnavailable("libseccomp produced no filter program")
    return program


@functools.lru_cache(maxsize=1)
def filter_hex() -> str:
    """The program as hex, for the tracer's command line (asked for at every sandbox start)."""
    return filter_program().hex()


def describe() -> str:
    """One line for ``egcfg doctor``."""
    try:
        n = len(filter_program()) // 8
    except FilterUnavailable as exc:
        return f"unavailable: {exc}"
    return (f"seccomp BPF from libseccomp, {n} instructions, on every run: EPERM for "
            f"{len(blocked_syscalls())} syscalls ({', '.join(blocked_syscalls()[:6])}, ...; see the README)")
