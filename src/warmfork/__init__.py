"""warmfork: run `python -m MODULE` in a process forked from a warm, per-user server (see README.md).

`python -m warmfork -m MODULE ARGS` behaves like `python -m MODULE ARGS` but starts in milliseconds once a
server has imported (and used) what a warm-up file names. Nothing is shared with other users, the process
keeps its caller's settings, and it dies with its caller and with its server; otherwise it runs cold.
"""
