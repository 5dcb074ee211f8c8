"""What a forked process inherits that a fresh one would take from its caller, and the server key built on it.

A server is started by a client and inherits that client's process settings; every process it forks
inherits them from the server. So a client only uses a server whose key (a hash of its interpreter, its
flags, the environment read at import, the warm-up file and these settings) equals its own, and each forked
process checks the settings again against its client's before it runs anything (`differences`)."""

from __future__ import annotations

import hashlib
import os
import resource
import sys

PROTOCOL = 2
# Environment variables read once, when the interpreter or a native library starts or a module is imported
# (PYTHONPATH is not: a forked process takes its client's sys.path). WARMFORK_KEY_ENV adds prefixes.
KEY_ENV = (
    "PYTHON",
    "LANG",
    "LC_",
    "TZ",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "GLIBC_TUNABLES",
    "MALLOC_",
    "OMP_",
    "OPENBLAS_",
    "GOTO_",
    "MKL_",
    "KMP_",
    "BLIS_",
    "VECLIB_",
    "NUMEXPR_",
)
STATUS_FIELDS = (
    "Uid",
    "Gid",
    "Groups",
    "NoNewPrivs",
    "Seccomp",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "Cpus_allowed_list",
    "Mems_allowed_list",
)
PROC_FILES = ("cgroup", "oom_score_adj", "timerslack_ns", "personality", "attr/current")
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
RLIMITS = tuple(sorted(name for name in dir(resource) if name.startswith("RLIMIT_")))
IOPRIO_GET = {"x86_64": 252, "aarch64": 31}  # syscall numbers (the standard library has no ioprio_get)


def process_settings() -> dict[str, str]:
    """This process's scheduling, limits, cgroups, credentials, capabilities, CPU and memory sets,
    namespaces and security labels, as strings (a fork inherits all of them)."""
    found = {
        "nice": str(os.getpriority(os.PRIO_PROCESS, 0)),
        "scheduler": f"{os.sched_getscheduler(0)}/{os.sched_getparam(0).sched_priority}",
        "ioprio": _ioprio(),
    }
    for name in RLIMITS:
        found[name] = str(resource.getrlimit(getattr(resource, name)))
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                field, _, value = line.partition(":")
                if field in STATUS_FIELDS:
                    found[field] = " ".join(value.split())
    except OSError:
        found["status"] = "unreadable"
    for name in PROC_FILES:
        try:
            with open(f"/proc/self/{name}", "rb") as handle:
                found[name] = handle.read().decode(errors="replace").strip()
        except OSError:
            found[name] = ""
    for name in NAMESPACES:
        try:
            found[f"ns/{name}"] = os.readlink(f"/proc/self/ns/{name}")
        except OSError:
            found[f"ns/{name}"] = ""
    return found


def _ioprio() -> str:
    number = IOPRIO_GET.get(os.uname().machine)
    if number is None:
        return "unknown"
    import ctypes

    return str(ctypes.CDLL(None, use_errno=True).syscall(number, 1, 0))  # IOPRIO_WHO_PROCESS, this process


def differences(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """'name: theirs != ours' for each setting that differs."""
    return [
        f"{name} {expected.get(name)!r} != {actual.get(name)!r}"
        for name in sorted(set(expected) | set(actual))
        if expected.get(name) != actual.get(name)
    ]


def key_environment(environ: dict[str, str]) -> list[str]:
    extra = tuple(os.environ.get("WARMFORK_KEY_ENV", "").replace(",", " ").split())
    prefixes = KEY_ENV + extra
    return sorted(f"{k}={v}" for k, v in environ.items() if k.startswith(prefixes) and k != "PYTHONPATH")


def package_digest() -> str:
    """The runner's own code: a changed runner never reuses a server running the old one."""
    digest = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as handle:
                digest.update(name.encode() + b"\0" + handle.read())
    return digest.hexdigest()


def key_parts(warmup: bytes | None, process: dict[str, str]) -> list[str]:
    import sysconfig

    parts = [
        f"protocol {PROTOCOL}",
        sys.executable,
        os.path.realpath(sys.executable),
        sys.version,
        repr(tuple(sys.flags)),
        repr(list(dict.fromkeys(sys.warnoptions))),  # (-W given again to a server that also reads PYTHONWARNINGS)
        repr(sorted(sys._xoptions.items())),
        package_digest(),
        "warm-up " + (hashlib.sha256(warmup).hexdigest() if warmup is not None else "none"),
    ]
    for path in sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}):
        try:
            parts.append(f"{path}:{os.stat(path).st_mtime_ns}")  # changes when a package is installed
        except OSError:
            parts.append(path)
    parts += key_environment(dict(os.environ))
    parts += [f"{name}={value}" for name, value in sorted(process.items())]
    return parts


def key(parts: list[str]) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def read_warmup() -> tuple[str | None, bytes | None]:
    """WARMFORK_WARMUP's path and content (None, None when unset); OSError if it cannot be read."""
    path = os.environ.get("WARMFORK_WARMUP")
    if not path:
        return None, None
    path = os.path.abspath(path)
    with open(path, "rb") as handle:
        return path, handle.read()
