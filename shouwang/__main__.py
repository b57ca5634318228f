"""`python -m shouwang` is the `shouwang` command."""

import sys

from shouwang.cli import main

sys.exit(main())
