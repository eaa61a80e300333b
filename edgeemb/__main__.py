"""python -m edgeemb: the same as the `edgeemb` command."""
import sys

from .cli.main import main

sys.exit(main())
