"""`python -m adapters.cli`: the `tritonfleet` command without its console script."""

import sys

from adapters.cli import main

if __name__ == "__main__":
    sys.exit(main())
