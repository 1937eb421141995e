"""The processes of one ROS test: an isolated ROS environment, child processes that die with the test (bridge nodes
as the launch files start them, franky-sim), and the removal of the Fast DDS shared-memory segments killed processes
leave behind. No rclpy import: usable before a test's first ROS context.
"""

from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

ROS_ENV_KEYS = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")
SHM_DIR = Path("/dev/shm")
TESTS_DIR = Path(__file__).resolve().parents[1]


def isolated_ros_env(base: dict | None = None) -> dict:
    """Environment for ROS processes of one test: discovery on localhost only, a random domain id.
    (rmw_fastrtps adds Fast DDS's shared-memory transport for LOCALHOST whatever FASTDDS_BUILTIN_TRANSPORTS or an XML
    profile say, so a killed process leaves its segments: `remove_dead_shm_segments`.)"""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    env.pop("ROS_STATIC_PEERS", None)
    return env


def shm_segments() -> set[str]:
    return {p.name for p in SHM_DIR.glob("*fastrtps_*")} if SHM_DIR.is_dir() else set()


def _mapped_shm_names() -> set[str]:
    """Names of /dev/shm files some process (that this user may inspect) has mapped."""
    names = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:
            continue
        names.update(line.rsplit("/", 1)[-1] for line in text.splitlines() if " /dev/shm/" in line)
    return names


def remove_dead_shm_segments(keep: set[str]) -> list[str]:
    """Remove the Fast DDS shared-memory segments no live process uses, except the names in `keep` (take
    `shm_segments()` before the test: other users' segments are left alone). A segment X is dead when an exclusive
    flock on X_el can be taken (every process listening on X holds a shared one, as `fastdds shm clean` checks) or,
    without X_el (a port a sender opened for a listener that died), when no process has X mapped."""
    import fcntl

    mapped = _mapped_shm_names()
    present = shm_segments()
    removed = []
    for base in sorted(present - keep):
        if base.endswith("_el") or base.startswith("sem."):
            continue
        if base + "_el" in present:
            try:
                fd = os.open(SHM_DIR / (base + "_el"), os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                dead = True
            except OSError:
                dead = False
            finally:
                os.close(fd)
        else:
            dead = base not in mapped
        if dead:
            for name in (base, base + "_el", f"sem.{base}_mutex"):
                if name not in keep and name in present:
                    (SHM_DIR / name).unlink(missing_ok=True)
                    removed.append(name)
    return removed


_BOOT = """import ctypes, os, runpy, signal, sys
ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG: die with the process that started us
if os.getppid() != int(sys.argv[1]):
    os._exit(1)  # that process died before the line above
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


class ChildProcess:
    """`python -m module args...` that dies with this process (even on SIGKILL of this one), its output in a file."""

    def __init__(self, module: str, args: list[str], env: dict, log_path: str | Path) -> None:
        import subprocess
        import sys

        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")  # a pipe left unread would fill up and block the child
        self.proc = subprocess.Popen([sys.executable, "-u", "-c", _BOOT, str(os.getpid()), module, *args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT (a node closes its hardware and exits), SIGKILL if it is still there after `timeout` s."""
        import signal
        import subprocess

        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait(10.0)
        self._log.close()


@contextmanager
def node_process(name: str, params: dict, env: dict, log_dir: str | Path, module: str | None = None):
    """The bridge node `name` in its own process with `params` (a ROS 2 parameter file), as the launch files start
    it; stopped (SIGINT, then SIGKILL) on exit. `module`: a module of `doubles` to run instead of the node's own
    (e.g. `doubles.scripted_policy_node`)."""
    import yaml

    from robot_bridge.graph import NODES

    log_dir = Path(log_dir)
    params_file = log_dir / f"{name}.params.yaml"
    params_file.write_text(yaml.safe_dump({name: {"ros__parameters": params}}))
    if module is not None:  # the doubles live in tests/, beside this file's package
        env = env | {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH", "")]))}
    child = ChildProcess(module or NODES[name].module, ["--ros-args", "--params-file", str(params_file)], env,
                         log_dir / f"{name}.log")
    try:
        yield child
    finally:
        child.stop()


@contextmanager
def franky_sim_process(hostname: str, timeout: float = 60.0):
    """franky-sim (MuJoCo FR3 + hand) in its own process serving FCI on `hostname` (a 127.x.y.z address).

    Its own process keeps the 1 kHz simulation loop off this process's GIL (embedded, it fell behind real time
    while nodes ran beside it and libfranka reported network errors). Dies with this process; SIGKILL on exit.
    """
    import tempfile

    if not hostname.startswith("127."):
        raise ValueError(f"franky_sim_process: {hostname} is not a loopback address")
    log_dir = Path(tempfile.mkdtemp(prefix="franky_sim_"))
    child = ChildProcess("franky_sim.run_server", ["--simulator", "mujoco", "--hostname", hostname], dict(os.environ),
                         log_dir / "franky_sim.log")
    try:
        deadline = time.monotonic() + timeout
        while "Connect to the server" not in child.log_tail(100_000):
            if not child.alive():
                raise RuntimeError(f"franky-sim exited with {child.proc.returncode}: {child.log_tail(2000)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"franky-sim did not come up on {hostname} in {timeout} s")
            time.sleep(0.05)
        yield child
    finally:
        child.kill()
