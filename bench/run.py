"""Entry point of the speed suite (issue 6); `make bench` runs it. See suite/__main__.py.

.venv/bin/python bench/run.py [--quick] [--only a,b,g,c,d,f] [--profile DIR] [--help]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
