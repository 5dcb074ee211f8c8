"""python -m warmfork -m MODULE [ARGS...] | --start | --stop [--all] | --status | --serve KEY"""

from __future__ import annotations

import sys

USAGE = """usage: python -m warmfork -m MODULE [ARGS...]   run `python -m MODULE ARGS` warm (or cold)
       python -m warmfork --start              start this environment's server; wait until it answers
       python -m warmfork --stop [--all]       stop this environment's server (--all: every one of yours)
       python -m warmfork --status             this environment's directory, key and server pid (JSON)
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 2 and argv[0] == "-m":
        try:
            from warmfork import client
        except (ImportError, AttributeError) as exc:  # no fcntl, resource, O_DIRECTORY...: not a POSIX system
            return _subprocess(argv[1], argv[2:], exc)
        return client.run(argv[1], argv[2:])
    if argv == ["--start"]:
        from warmfork import client

        return client.start()
    if argv in (["--stop"], ["--stop", "--all"]):
        from warmfork import client

        stopped = client.stop(every=argv[1:] == ["--all"])
        sys.stderr.write(f"warmfork: asked {stopped} server(s) to stop\n")
        return 0
    if argv == ["--status"]:
        import json

        from warmfork import client
        from warmfork.rendezvous import Doubt

        try:
            print(json.dumps(client.status()))  # noqa: T201 - the command's output
        except Doubt as doubt:
            sys.stderr.write(f"warmfork: {doubt}\n")
            return 1
        return 0
    if len(argv) == 2 and argv[0] == "--serve":
        from warmfork import server

        return server.serve(argv[1])
    sys.stderr.write(USAGE)
    return 2


def _subprocess(module: str, args: list[str], reason: Exception) -> int:
    import subprocess

    sys.stderr.write(f"warmfork: running cold: this platform lacks what warm runs need ({reason})\n")
    return subprocess.call([sys.executable, *subprocess._args_from_interpreter_flags(), "-m", module, *args])


if __name__ == "__main__":
    sys.exit(main())
