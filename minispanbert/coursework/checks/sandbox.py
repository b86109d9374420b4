"""The sandbox: where a submission's code runs while it is graded (checks/runner.py is the trusted side).

    python -m coursework_checks.sandbox      (started by the runner; requests on stdin, replies on stdout)

The runner starts this module as a fresh interpreter, the *zygote*, before it reads any reference. The
zygote imports NumPy and SciPy once, never the references, the graded tests or the submission. For
each request (a JSON line: one test) it forks a child, and replies (a JSON line: how the child ended)
once the child and every process it started are gone. The child

1. starts its own session and process group (``setsid``) and dies with the zygote;
2. builds the checks module from the file ``test.py`` the runner wrote into its scratch folder: the
   shared helpers and the requested test only (a visible test's child never holds a hidden test's
   code), then deletes that file;
3. confines itself: limits on CPU time, address space, file size and core dumps; Landlock where the
   kernel has it (reads beneath the Python installation, the system folders and the submission
   copy, writes beneath its scratch folder only, no TCP, no signal to or ptrace of the grader's
   processes); as root (Gradescope) it then becomes an unprivileged user (``request["user"]``), with
   a limit on its processes;
4. runs the test with a :class:`harness.Check` in collect mode: what the test compares goes to its
   scratch folder (``records.jsonl``, one JSON line per check, arrays in ``<n>.<role>.npy``), ended by
   a line ``{"end": ..., "stopped": why or null, "output": what it printed}``.

Nothing a child starts outlives its test: the zygote is a child subreaper (Linux), so every orphan of
the test (a double-forked daemon included, whatever its session) becomes the zygote's child; when the
test ends or its time is up, the zygote kills the test's process group, then every child of its own
until it has none (:func:`kill_descendants`). Without Linux's /proc and prctl only the process group
is killed.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib.abc
import importlib.util
import json
import os
import pwd
import resource
import signal
import site
import sys
import sysconfig
import time
import traceback

from .harness import FORBIDDEN_MODULES, Check, Fail

OUTPUT_CAP = 4000  # characters of a test's printed output kept for the student
FILE_SIZE_LIMIT = 64 << 20  # bytes in any one file a child writes (its log, a collected array)
MEMORY_LIMIT = 4 << 30  # bytes of address space of a child
PROCESS_LIMIT = 64  # processes of the unprivileged user, when the child runs as one
CPU_SLACK_S = 5  # CPU seconds beyond the test's time limit before SIGXCPU
SYSTEM_READABLE = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc")
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")

PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 38, 36
# Landlock (linux/landlock.h): syscall numbers are the same on every architecture.
LANDLOCK_CREATE_RULESET, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_EXECUTE, LANDLOCK_WRITE_FILE, LANDLOCK_READ_FILE, LANDLOCK_READ_DIR = 1, 2, 4, 8
LANDLOCK_REFER, LANDLOCK_TRUNCATE = 1 << 13, 1 << 14
LANDLOCK_FILE_RIGHTS = LANDLOCK_EXECUTE | LANDLOCK_WRITE_FILE | LANDLOCK_READ_FILE | LANDLOCK_TRUNCATE
LANDLOCK_READ = LANDLOCK_EXECUTE | LANDLOCK_READ_FILE | LANDLOCK_READ_DIR


class ForbiddenImport(importlib.abc.MetaPathFinder):
    """Refuses torch, jax and autograd: the assignments are about writing the backward by hand."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in FORBIDDEN_MODULES:
            raise ImportError(f"import of {fullname!r} is not allowed in this assignment: write the "
                              "forward and backward passes with NumPy (xp) only")
        return None


class CappedText:
    """A text stream that keeps the first ``cap`` characters and counts the rest."""

    def __init__(self, cap: int):
        self.cap, self.parts, self.kept, self.dropped = cap, [], 0, 0

    def write(self, text):
        room = self.cap - self.kept
        if room > 0:
            self.parts.append(text[:room])
            self.kept += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def flush(self):
        pass

    def getvalue(self) -> str:
        text = "".join(self.parts)
        if self.dropped:
            text += f"\n... ({self.dropped} more characters of output cut)"
        return text


class TimeLimit(BaseException):
    """Raised by SIGALRM inside a test that ran past its limit (BaseException: a student's
    ``except Exception`` cannot swallow it)."""


def _on_alarm(signum, frame):
    raise TimeLimit()


# --- processes ---------------------------------------------------------------------------------------
def _prctl(option: int, value: int) -> bool:
    """prctl(2) on Linux; False where it does not exist or fails."""
    if not sys.platform.startswith("linux"):
        return False
    return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0


def become_subreaper() -> bool:
    """Orphaned descendants of this process become its children instead of init's (Linux)."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (zombies included), from /proc."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as f:
                        stat = f.read()
                except OSError:
                    continue  # it ended meanwhile
                if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:  # field 4, after "(comm)"
                    found.append(int(entry.name))
    return found


def kill_descendants(process_group: int | None = None, *, keep: tuple = ()) -> None:
    """Kill ``process_group`` and every child of this process except ``keep``, until none is left.
    In a subreaper every living descendant either is such a child or descends from one (an orphan
    is adopted when its parent exits), so an empty scan means no descendant is left."""
    if process_group is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process_group, signal.SIGKILL)
    while True:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:  # reap the dead (never a kept process: it lives)
                pass
        others = [pid for pid in _children(os.getpid()) if pid not in keep]
        if not others:
            return
        for pid in others:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.001)


# --- confinement -------------------------------------------------------------------------------------
class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock(readable, writable) -> int:
    """Restrict this process (and what it starts) to reading beneath ``readable`` and reading and
    writing beneath ``writable``, no TCP (Landlock ABI 4+), and no signal or abstract socket outside
    its own domain (ABI 6+) -> the ABI used, 0 where Landlock is unavailable (nothing restricted)."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return 0
    handled = (1 << 13) - 1 | (LANDLOCK_REFER if abi >= 2 else 0) | (LANDLOCK_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(handled, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)  # no TCP; signal + socket scope
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = libc.syscall(LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return 0
    try:
        for paths, access in ((readable, LANDLOCK_READ), (writable, handled)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue  # a folder this system does not have
                rights = access & handled if os.path.isdir(path) else access & handled & LANDLOCK_FILE_RIGHTS
                rule = _PathBeneath(rights, fd)
                done = libc.syscall(LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule),
                                    ctypes.c_uint32(0))
                os.close(fd)
                if done != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule({path})")
        if not _prctl(PR_SET_NO_NEW_PRIVS, 1) or libc.syscall(LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset),
                                                               ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def readable_roots(project: str, private) -> list[str]:
    """What a child may read: the Python installation, the system folders, the submission copy.
    A root holding a ``private`` path (the autograder, the grader's work folder) is left out."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *SYSTEM_READABLE, *site.getsitepackages(),
             *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib"))}
    if site.ENABLE_USER_SITE:
        roots.add(site.getusersitepackages())
    private = [os.path.realpath(p) + os.sep for p in private]
    kept = [r for r in roots if not any(p.startswith(os.path.realpath(r).rstrip(os.sep) + os.sep) for p in private)]
    return sorted(kept) + list(DEVICES) + [project]


def confine(request: dict) -> None:
    """Limits, Landlock, and (as root) an unprivileged user for this child; see the module docstring."""
    def limit(which, value):
        hard = resource.getrlimit(which)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))

    limit(resource.RLIMIT_CPU, int(request["time_limit"]) + CPU_SLACK_S)
    limit(resource.RLIMIT_AS, MEMORY_LIMIT)
    limit(resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT)
    limit(resource.RLIMIT_CORE, 0)
    landlock(readable_roots(request["root"], request["private"]), [request["scratch"]] + list(DEVICES[:1]))
    if request.get("user"):
        user = pwd.getpwnam(request["user"])
        limit(resource.RLIMIT_NPROC, PROCESS_LIMIT)
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)


# --- the child ---------------------------------------------------------------------------------------
class Collector:
    """Collect mode's sink: one JSON line per check in ``records.jsonl``, arrays as ``.npy`` files."""

    def __init__(self, folder: str):
        self.folder, self.count = folder, 0
        self.out = open(os.path.join(folder, "records.jsonl"), "w", encoding="utf-8")

    def add(self, kind: str, what: str, arrays: dict, **options) -> None:
        import numpy as np

        files = {}
        for role, array in arrays.items():
            files[role] = f"{self.count}.{role}.npy"
            np.save(os.path.join(self.folder, files[role]), array, allow_pickle=False)
        self.count += 1
        self.out.write(json.dumps({"kind": kind, "what": what, "files": files, "options": options}) + "\n")
        self.out.flush()

    def end(self, stopped: str | None, output: str) -> None:
        self.out.write(json.dumps({"end": True, "stopped": stopped, "output": output}) + "\n")
        self.out.close()


def _student_traceback(exc, root: str) -> str:
    """The frames of ``exc`` that lie in the submission, innermost last, paths relative to it."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename).startswith(root)]
    lines = [f"  {os.path.relpath(f.filename, root)}, line {f.lineno}, in {f.name}: {(f.line or '').strip()}"
             for f in frames[-4:]]
    return ("\n" + "\n".join(lines)) if lines else ""


def run_test(fn, name: str, collector: Collector, *, root: str, time_limit: float) -> None:
    """Run one graded test in collect mode; end the records with why it stopped early (None: it did not)."""
    captured = CappedText(OUTPUT_CAP)
    stopped = None
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            fn(Check(name, None, record=False, collector=collector))
    except TimeLimit:
        stopped = (f"time limit of {time_limit:g} s exceeded: an endless loop, or a Python loop over "
                   "every element where one array operation would do?")
    except Fail as exc:
        stopped = str(exc)
    except NotImplementedError as exc:
        stopped = f"NotImplementedError: {exc}"
    except ImportError as exc:
        stopped = f"ImportError: {exc}{_student_traceback(exc, root)}"
    except BaseException as exc:  # noqa: BLE001 -- everything a submission raises becomes a message
        stopped = (f"your code raised {type(exc).__name__}: {str(exc)[:500]}{_student_traceback(exc, root)}\n"
                   "(a shape or type mistake? run the function on the docstring's shapes)")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    collector.end(stopped, captured.getvalue())


def load_test(module: str, name: str, source: str):
    """The graded test ``name`` from the reduced source of ``module`` (relative imports resolved in
    this package), registered as that module so that the test's own imports find it."""
    spec = importlib.util.spec_from_loader(f"{__package__}.{module}", loader=None)
    checks = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = checks
    exec(compile(source, f"<graded test {name}>", "exec"), checks.__dict__)  # noqa: S102 -- the grader's own code
    return checks.TESTS[name]


def child(request: dict) -> None:
    """The forked child: one test in a confined process, its records in its scratch folder. Never returns."""
    code = 1
    try:
        os.setsid()
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        scratch = request["scratch"]
        os.chdir(scratch)
        log = os.open("output.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # not the zygote's request pipe
        os.dup2(log, 1)  # nor its reply pipe: C-level output goes to the log
        os.dup2(log, 2)
        os.closerange(3, 1 << 16)
        with open("test.py", encoding="utf-8") as f:
            source = f.read()
        os.remove("test.py")
        fn = load_test(request["module"], request["test"], source)
        del source
        os.environ.update(HOME=scratch, TMPDIR=scratch)
        if request.get("user"):
            user = pwd.getpwnam(request["user"])
            os.chown(scratch, user.pw_uid, user.pw_gid)
        confine(request)
        collector = Collector(scratch)
        signal.signal(signal.SIGALRM, _on_alarm)
        run_test(fn, request["test"], collector, root=os.path.abspath(request["root"]) + os.sep,
                 time_limit=request["time_limit"])
        code = 0
    finally:
        os._exit(code)


# --- the zygote --------------------------------------------------------------------------------------
def serve(request: dict) -> dict:
    """Fork a child for ``request``, wait for it up to ``request["limit"]`` seconds, then kill its
    group and every descendant -> {"status": its wait status, "timed_out": bool}."""
    pid = os.fork()
    if pid == 0:
        child(request)
    deadline, timed_out = time.monotonic() + request["limit"], False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            status = os.waitpid(pid, 0)[1]
            break
        time.sleep(0.002)
    kill_descendants(pid)
    return {"status": status, "timed_out": timed_out}


def main() -> int:
    """The zygote: import NumPy once, then serve one request per line of stdin until it closes."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the runner's end is the zygote's end
    become_subreaper()
    import numpy  # noqa: F401 -- imported once here, inherited by every child
    try:
        import scipy.special  # noqa: F401
    except ImportError:
        pass
    sys.meta_path.insert(0, ForbiddenImport())
    while True:
        line = sys.stdin.readline()
        if not line:
            kill_descendants()
            return 0
        sys.stdout.write(json.dumps(serve(json.loads(line))) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
