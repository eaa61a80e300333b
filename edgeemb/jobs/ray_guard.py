"""A watchdog that kills what a local Ray cluster leaves behind when its driver dies without shutting it down.

Measured with Ray 2.60 (driver SIGKILLed mid-run): gcs_server and raylet die with the driver (Ray starts them
with PR_SET_PDEATHSIG) and the workers follow the raylet within 5 s, but the raylet's DashboardAgent and
RuntimeEnvAgent outlive it by ~61 s, blocked publishing the raylet's death to the dead GCS (a 60 s timeout).
The watchdog, started by the engine just before it starts a local cluster, records the driver's descendants
twice a second (only those started after the watchdog whose command line names ray, so the caller's own
children are left alone); when its pipe from the driver closes without "done" (SIGKILL, os._exit, a crash), it
SIGKILLs those still alive. A process is only killed when its start time is the recorded one (a reused pid is
spared).

Runs as `python -I -S ray_guard.py DRIVER_PID` with the standard library only; `start` / `Guard.done` are the
driver's side.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

TICK_S = 0.5


class Guard:
    """The driver's handle on its watchdog: `done()` after a clean `ray.shutdown()` lets it exit, killing nothing."""

    def __init__(self, proc: subprocess.Popen[bytes]):
        self.proc = proc

    def done(self) -> None:
        """Tell the watchdog the cluster was shut down cleanly, and reap it."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"done\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start() -> Guard | None:
    """Start the watchdog of this driver (Linux only: it reads /proc); None where it cannot run."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self"):
        return None
    # its own session: a Ctrl-C or hang-up that reaches the driver's process group does not stop it first
    proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    return Guard(proc)


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, start time, state) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19]), fields[0]


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of `root`."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append((int(entry), st[1]))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def names_ray(pid: int) -> bool:
    """Whether a process's command line (or the title Ray gives its workers, `ray::...`) names ray."""
    try:
        return b"ray" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def watch(driver: int) -> int:
    """Record the driver's Ray descendants until stdin closes; kill them unless the driver said "done"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    me = os.getpid()
    born = (_stat(me) or (0, 0, ""))[1]
    seen: dict[int, int] = {}
    checked: set[tuple[int, int]] = set()
    data = b""
    while True:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], TICK_S)
        if ready:
            chunk = os.read(sys.stdin.fileno(), 64)
            if chunk:
                data += chunk
                continue
            break  # EOF: the driver is gone or finished
        for pid, started in descendants(driver).items():
            if (pid, started) not in checked and pid != me and started >= born:
                checked.add((pid, started))
                if names_ray(pid):
                    seen[pid] = started
    if data.startswith(b"done"):
        return 0
    for pid, started in seen.items():
        st = _stat(pid)
        if st is not None and st[1] == started and st[2] not in "ZX":
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1])))
