"""Another local user (uid `nobody`, through setpriv) attacks the rendezvous: a symlinked directory, a
symlink flipped while the client checks, a fake server on the caller's socket path, planted symlinks for the
log and the lock. In each, nothing of the caller's environment or descriptors reaches the other uid, no file
of the caller's is overwritten, and the module runs cold and succeeds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import require
from tests.warmfork.helpers import wait_until, warnings

NOBODY = 65534
CANARY = "s3cret-value-never-to-leave"

# Listens on argv[1]; for each connection records how many bytes and descriptors arrived.
FAKE_SERVER = """
import json, os, socket, sys
path, record, ready = sys.argv[1:4]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)
server.listen(16)
open(ready, "w").close()
while True:
    conn, _ = server.accept()
    conn.settimeout(2)
    got = fds = 0
    try:
        while True:
            data, ancillary, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(64))
            fds += sum(len(p) // 4 for level, kind, p in ancillary if kind == socket.SCM_RIGHTS)
            got += len(data)
            if not data:
                break
    except OSError:
        pass
    with open(record, "a") as handle:
        handle.write(json.dumps({"bytes": got, "fds": fds}) + "\\n")
    conn.close()
"""
# Flips argv[1] between argv[2] and argv[3] until argv[4] exists; meanwhile tries to replace, rename and
# write into argv[2] (the caller's directory); writes how many of those attempts succeeded to argv[5].
FLIPPER = """
import os, sys
link, mine, evil, stop, result = sys.argv[1:6]
succeeded = attempts = 0
while not os.path.exists(stop):
    for target in (mine, evil):
        try:
            os.symlink(target, link + ".new")
            os.replace(link + ".new", link)
        except OSError:
            pass
    for attack in (
        lambda: os.rename(mine, mine + ".gone"),
        lambda: os.rmdir(mine),
        lambda: open(os.path.join(mine, "planted"), "w").close(),
        lambda: os.symlink(evil, os.path.join(mine, "x.sock")),
    ):
        attempts += 1
        try:
            attack()
            succeeded += 1
        except OSError:
            pass
with open(result, "w") as handle:
    handle.write(f"{succeeded} {attempts}")
"""


class OtherUser:
    """Runs Python as uid nobody; owns a sticky world-writable directory like /tmp for the attacks."""

    def __init__(self, shared: Path) -> None:
        self.shared = shared
        self.procs: list[subprocess.Popen] = []

    def cmd(self, script: str, *args: object) -> list[str]:
        who = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        return ["setpriv", *who, sys.executable, "-I", "-c", script, *map(str, args)]

    def run(self, script: str, *args: object) -> None:
        subprocess.run(self.cmd(script, *args), check=True, capture_output=True, timeout=60)

    def start(self, script: str, *args: object) -> subprocess.Popen:
        proc = subprocess.Popen(self.cmd(script, *args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def mkdir(self, path: Path) -> Path:
        self.run("import os, sys; os.mkdir(sys.argv[1]); os.chmod(sys.argv[1], 0o777)", path)
        return path

    def symlink(self, target: Path, link: Path) -> None:
        self.run("import os, sys; os.symlink(sys.argv[1], sys.argv[2])", target, link)

    def fake_server(self, path: Path) -> Path:
        """A server of this uid on `path`; returns the file where it records what it received."""
        record, ready = path.parent / "record.jsonl", path.parent / "ready"
        self.start(FAKE_SERVER, path, record, ready)
        wait_until(ready.exists, "the fake server did not start")
        return record

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


@pytest.fixture
def other_user():
    require(os.geteuid() == 0, "acting as a second uid needs root: run these tests as root (CI does)")
    require(shutil.which("setpriv"), "setpriv is not installed: install util-linux")
    probe = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-I", "-c", "0"],
        capture_output=True,
    )
    require(
        probe.returncode == 0,
        f"uid {NOBODY} cannot run {sys.executable} ({probe.stderr.decode().strip()}): make the .venv's path "
        "readable and traversable by others",
    )
    shared = Path(tempfile.mkdtemp(prefix="wf-shared-"))
    shared.chmod(0o1777)  # like /tmp: everyone may create entries, only their owner may replace them
    user = OtherUser(shared)
    yield user
    user.stop()
    shutil.rmtree(shared, ignore_errors=True)


def received(record: Path) -> list[dict]:
    time.sleep(0.3)  # let the fake server finish recording a connection that just ended
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def assert_ran_cold(result: subprocess.CompletedProcess, *reason: str) -> None:
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["caller"] is None  # cold: not forked by any server
    said = warnings(result.stderr)
    assert len(said) == 1 and all(r in said[0] for r in reason), result.stderr


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_directory_reached_through_another_users_symlink_is_refused(runner, other_user, tmp_path, below):
    key = runner.status()["key"]
    evil = other_user.mkdir(other_user.shared / "evil")
    where = other_user.mkdir(evil / below) if below else evil
    record = other_user.fake_server(where / f"{key}.sock")
    victim = tmp_path / "victim.txt"
    victim.write_text("the caller's file")
    for name in (f"{key}.log", f"{key}.lock"):  # planted where the old runner opened them through symlinks
        other_user.symlink(victim, where / name)
    other_user.symlink(evil, other_user.shared / "link")

    result = runner.client(WARMFORK_DIR=str(other_user.shared / "link" / below), CANARY=CANARY)
    assert_ran_cold(result, "link belongs to uid 65534")
    assert received(record) == []
    assert victim.read_text() == "the caller's file"
    assert all(p.lstat().st_uid == NOBODY for p in evil.rglob("*"))  # the caller created nothing there


def test_a_symlink_flipped_during_the_checks_never_leads_to_the_other_user(runner, other_user):
    key = runner.status()["key"]
    mine = other_user.shared / "mine"
    mine.mkdir(mode=0o700)  # the caller's own directory in the shared one: a valid WARMFORK_DIR
    evil = other_user.mkdir(other_user.shared / "evil")
    record = other_user.fake_server(evil / f"{key}.sock")
    stop, result = other_user.shared / "stop", other_user.shared / "result"
    other_user.start(FLIPPER, other_user.shared / "link", mine, evil, stop, result)
    wait_until((other_user.shared / "link").exists, "the flipper did not start")

    for _ in range(10):
        assert_ran_cold(runner.client(WARMFORK_DIR=str(other_user.shared / "link"), CANARY=CANARY), "uid 65534")
    # the caller's own directory beside the flipping link works warm, and the other user cannot touch it
    runner.start(WARMFORK_DIR=str(mine))
    warm = runner.client(WARMFORK_DIR=str(mine), CANARY=CANARY)
    assert warm.returncode == 0 and json.loads(warm.stdout)["caller"], warm.stderr
    stop.touch()
    wait_until(result.exists, "the flipper did not stop")
    succeeded, attempts = map(int, result.read_text().split())
    assert succeeded == 0 and attempts > 0
    assert received(record) == []
    subprocess.run([sys.executable, "-m", "warmfork", "--stop", "--all"], env={**runner.env, "WARMFORK_DIR": str(mine)})


def test_a_server_of_another_uid_on_the_callers_socket_gets_nothing(runner, other_user):
    key = runner.status()["key"]
    evil = other_user.mkdir(other_user.shared / "evil")
    record = other_user.fake_server(evil / "fake.sock")
    planted = runner.directory / f"{key}.sock"
    os.rename(evil / "fake.sock", planted)  # (as if it got there somehow) and it looks like the caller's
    os.chown(planted, 0, 0, follow_symlinks=False)

    result = runner.client(CANARY=CANARY)
    assert_ran_cold(result, "answered by uid 65534")
    assert received(record) == [{"bytes": 0, "fds": 0}]  # it saw a connection, and not one byte or descriptor


@pytest.mark.parametrize("name", ["log", "lock"])
def test_a_planted_symlink_in_the_callers_directory_overwrites_nothing(runner, tmp_path, name):
    key = runner.status()["key"]
    victim = tmp_path / "victim.txt"
    victim.write_text("the caller's file")
    (runner.directory / f"{key}.{name}").symlink_to(victim)

    first = runner.client()
    assert first.returncode == 0 and json.loads(first.stdout)["caller"] is None, first.stderr
    if name == "log":  # the server refuses to start and says why; the next run reports it once
        wait_until((runner.directory / f"{key}.failed").exists, "the server did not record its failure")
        assert_ran_cold(runner.client(), "could not start", f"{key}.log: a symlink")
    else:  # the client itself refuses to start a server on a lock it cannot trust
        assert_ran_cold(first, f"{key}.lock: a symlink")
    assert victim.read_text() == "the caller's file"
