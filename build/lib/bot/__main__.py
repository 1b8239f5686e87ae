"""`python -m bot` is the same as the `siyu` command."""

import sys

from bot.cli.main import main

sys.exit(main())
