"""`python -m loadgen ...` runs the same entry point as `tritonfleet loadgen ...`."""

import sys

from loadgen.cli import main

sys.exit(main())
