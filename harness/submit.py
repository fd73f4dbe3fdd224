"""``python -m harness.submit jobs/<sweep>.yaml``: the command line of ``harness.sweep.submit``."""
import sys

from harness.sweep.submit import main

if __name__ == "__main__":
    sys.exit(main())
