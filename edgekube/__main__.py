"""`python -m edgekube` and the Nuitka entry point."""

import sys

from edgekube import cli

sys.exit(cli.main())
