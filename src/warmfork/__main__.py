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
        from warmfork import client

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


if __name__ == "__main__":
    sys.exit(main())
