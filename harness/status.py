"""``python -m harness.status results/<sweep>``: the command line of ``harness.watch.status``."""
import sys

from harness.watch.status import main

if __name__ == "__main__":
    sys.exit(main())
