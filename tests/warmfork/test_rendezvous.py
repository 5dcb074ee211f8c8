"""The private directory walk and the file checks, on paths of this user's (tests/warmfork/test_security.py
has the second uid)."""

from __future__ import annotations

import os

import pytest

from warmfork import rendezvous
from warmfork.rendezvous import Doubt, Place, open_private_dir


def same_dir(fd: int, path) -> bool:
    try:
        opened, expected = os.fstat(fd), os.stat(path)
        return (opened.st_dev, opened.st_ino) == (expected.st_dev, expected.st_ino)
    finally:
        os.close(fd)


@pytest.fixture
def base(tmp_path):
    tmp_path.chmod(0o700)
    return tmp_path


def test_missing_components_are_created_private_and_the_last_is_opened(base):
    target = base / "a" / "b" / "c"
    assert same_dir(open_private_dir(str(target)), target)
    assert all(oct(p.stat().st_mode & 0o777) == "0o700" for p in (base / "a", base / "a" / "b", target))


def test_a_sticky_shared_directory_on_the_way_is_fine_one_others_may_write_is_not(base):
    sticky = base / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    assert same_dir(open_private_dir(str(sticky / "mine")), sticky / "mine")
    open_to_all = base / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    with pytest.raises(Doubt, match="open is writable by other users and not sticky"):
        open_private_dir(str(open_to_all / "mine"))


def test_the_last_directory_must_be_private(base):
    (base / "shared").mkdir()
    (base / "shared").chmod(0o755)
    with pytest.raises(Doubt, match="must be yours with mode 0700"):
        open_private_dir(str(base / "shared"))


def test_own_symlinks_are_followed_absolute_or_relative(base):
    real = base / "real"
    real.mkdir(mode=0o700)
    (base / "absolute").symlink_to(real)
    (base / "sub").mkdir()
    (base / "sub" / "relative").symlink_to("../real")
    for path in (base / "absolute", base / "sub" / "relative", base / "sub" / ".." / "real"):
        assert same_dir(open_private_dir(str(path)), real), path


def test_files_and_relative_paths_are_refused(base):
    (base / "file").write_text("")
    with pytest.raises(Doubt, match="is not a directory"):
        open_private_dir(str(base / "file" / "x"))
    with pytest.raises(Doubt, match="not an absolute path"):
        open_private_dir("relative/dir")


def test_the_first_private_candidate_wins(base, monkeypatch):
    monkeypatch.delenv("WARMFORK_DIR", raising=False)
    runtime = base / "runtime"
    runtime.mkdir(mode=0o777)
    runtime.chmod(0o777)  # not sticky: refused, so the cache directory is used
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    place = rendezvous.locate()
    assert place.path == str(base / "cache" / "warmfork")
    place.close()
    runtime.chmod(0o700)
    place = rendezvous.locate()
    assert place.path == str(runtime / "warmfork")
    place.close()


def test_files_are_opened_only_if_regular_own_and_singly_linked(base):
    place = Place(str(base), open_private_dir(str(base)))
    try:
        (base / "other").write_text("x")
        os.link(base / "other", base / "linked")
        with pytest.raises(Doubt, match="linked 2 times"):
            place.open("linked", os.O_RDONLY)
        os.mkfifo(base / "fifo")
        with pytest.raises(Doubt, match="not a regular file"):
            place.open("fifo", os.O_RDONLY)
        (base / "symlink").symlink_to(base / "other")
        with pytest.raises(Doubt, match="a symlink"):
            place.open("symlink", os.O_WRONLY | os.O_CREAT)
        place.write("note", "hello")
        assert place.read("note") == "hello"
    finally:
        place.close()
