"""How to run this wahookd again (a hint printed by the server, commands run by the CLI)."""

from __future__ import annotations

import os
from pathlib import Path


def invocation(argv0: str, executable: str) -> list[str]:
    """The argv prefix that runs this wahookd again, absolute, from any directory.

    argv0 is sys.argv[0]: the console script, the zipapp, or wahookd/__main__.py under
    `python -m wahookd`. Without a file to point at, it is plain `wahookd` (on PATH).
    """
    program = Path(argv0)
    if program.name == "__main__.py":
        return [executable, "-m", "wahookd"]
    if not argv0 or not program.is_file():
        return ["wahookd"]
    program = program.resolve()
    if os.access(program, os.X_OK):
        return [str(program)]
    return [executable, str(program)]  # a zipapp installed 0644, or a script run by python
