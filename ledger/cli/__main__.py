"""`python -m ledger.cli`: the command line."""

import sys

from ledger.cli.main import main

sys.exit(main())
