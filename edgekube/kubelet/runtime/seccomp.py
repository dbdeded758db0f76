"""The RuntimeDefault seccomp profile, written out by code as the OCI `linux.seccomp` object.

It is containerd's default profile (contrib/seccomp, the one Kubernetes' RuntimeDefault means on
containerd nodes), transcribed: an **allow-list**. Anything not listed fails with EPERM
(`SCMP_ACT_ERRNO`, errno 1), so a syscall newer than the list is refused rather than silently
allowed. On top of the ~370 ordinary syscalls:

- per-architecture extras (arch_prctl/modify_ldt on x86, the ARM cache and TLS calls, ...);
- `personality` only with the Linux, UNAME26, READ_IMPLIES_EXEC-free and query values;
- `socket` for every address family but AF_ALG (38) and AF_VSOCK (40);
- capability-gated groups: what CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_TIME, CAP_SYS_MODULE,
  CAP_SYS_BOOT, CAP_SYS_CHROOT, CAP_SYS_NICE, CAP_SYSLOG, CAP_BPF, CAP_PERFMON, ... would allow
  anyway are allowed only when the container's bounding set holds that capability;
- without CAP_SYS_ADMIN, `clone` only when it creates no namespace (the flags argument masked
  with CLONE_NEW*), and `clone3` answers ENOSYS so C libraries fall back to `clone`.

Names the running libseccomp does not know (newer syscalls) are skipped by runc, so one profile
serves every kernel. `ptrace` and `process_vm_*` are allowed unconditionally (containerd gates
them on kernel >= 4.8, where ptrace stopped being a seccomp bypass; edge kernels are newer).
Privileged containers and `Unconfined` get no profile; `Localhost` profiles are read from the
kubelet's seccomp directory by the bundle builder.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

CLONE_NEW_FLAGS = 0x7E020000  # NEWNS|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWCGROUP
AF_ALG = 38
AF_VSOCK = 40

BASE = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat
fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32
geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid
getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set
io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self
lchown lchown32 lgetxattr link linkat listen listmount listxattr listxattrat llistxattr _llseek
lremovexattr lseek lsetxattr lsm_get_self_attr lsm_list_modules lsm_set_self_attr lstat lstat64
madvise membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
mlockall map_shadow_stack mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget
msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat _newselect
open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease
pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv
recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename
renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select
semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto
setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid
setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32
setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask
sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statmount statx symlink
symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete
timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create
timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate
truncate64 ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat utimensat_time64
utimes vfork vmsplice wait4 waitid waitpid write writev
process_vm_readv process_vm_writev ptrace
""".split()

ARCH_EXTRA: dict[str, list[str]] = {
    "amd64": ["arch_prctl", "modify_ldt"],
    "386": ["modify_ldt"],
    "arm64": ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"],
    "arm": ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"],
    "ppc64le": ["sync_file_range2", "swapcontext"],
    "s390x": ["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"],
    "riscv64": ["riscv_flush_icache", "riscv_hwprobe"],
}

ARCHES: dict[str, list[str]] = {
    "amd64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "arm64": ["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"],
    "s390x": ["SCMP_ARCH_S390", "SCMP_ARCH_S390X"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
}

CAP_EXTRA: dict[str, list[str]] = {
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at"],
    "CAP_SYS_ADMIN": ["bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
                      "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open",
                      "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
                      "umount2", "unshare"],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_CHROOT": ["chroot"],
    "CAP_SYS_MODULE": ["delete_module", "init_module", "finit_module"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_PTRACE": ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_settime64"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYS_NICE": ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_BPF": ["bpf"],
    "CAP_PERFMON": ["perf_event_open"],
}

_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
             "armv6l": "arm", "armv8l": "arm", "i686": "386", "i386": "386", "s390x": "s390x",
             "ppc64le": "ppc64le", "riscv64": "riscv64"}


def go_arch(machine: str | None = None) -> str:
    """Go's GOARCH name for a `uname -m` machine (the key containerd's profile is made by)."""
    m = machine or platform.machine()
    return _MACHINES.get(m, m)


def _rule(names: Sequence[str], *, action: str = "SCMP_ACT_ALLOW", args: Sequence[dict[str, Any]] = (),
          errno_ret: int | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": list(names), "action": action}
    if args:
        rule["args"] = list(args)
    if errno_ret is not None:
        rule["errnoRet"] = errno_ret
    return rule


def _arg(index: int, value: int, op: str, value_two: int = 0) -> dict[str, Any]:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


def default_profile(bounding: Sequence[str], *, arch: str | None = None) -> dict[str, Any]:
    """The RuntimeDefault profile for a process with `bounding` capabilities."""
    goarch = go_arch(arch)
    rules: list[dict[str, Any]] = [_rule(BASE)]
    # socket(2): every family but AF_ALG and AF_VSOCK. Three rules, as one rule's conditions on
    # the same argument would be ANDed by runc.
    rules.append(_rule(["socket"], args=[_arg(0, AF_ALG, "SCMP_CMP_LT")]))
    rules.append(_rule(["socket"], args=[_arg(0, AF_ALG + 1, "SCMP_CMP_EQ")]))
    rules.append(_rule(["socket"], args=[_arg(0, AF_VSOCK, "SCMP_CMP_GT")]))
    for persona in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF):
        rules.append(_rule(["personality"], args=[_arg(0, persona, "SCMP_CMP_EQ")]))
    if goarch in ARCH_EXTRA:
        rules.append(_rule(ARCH_EXTRA[goarch]))
    caps = set(bounding)
    for cap, names in CAP_EXTRA.items():
        if cap in caps:
            rules.append(_rule(names))
    if "CAP_SYS_ADMIN" not in caps:
        index = 1 if goarch == "s390x" else 0
        rules.append(_rule(["clone"], args=[_arg(index, CLONE_NEW_FLAGS, "SCMP_CMP_MASKED_EQ", 0)]))
        # clone3's flags live in a struct seccomp cannot read: ENOSYS makes libc use clone.
        rules.append(_rule(["clone3"], action="SCMP_ACT_ERRNO", errno_ret=38))
    return {
        "defaultAction": "SCMP_ACT_ERRNO",  # errno EPERM, runc's default for the action
        "architectures": list(ARCHES.get(goarch, [])),
        "syscalls": rules,
    }
