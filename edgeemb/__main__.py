"""python -m edgeemb: the same as the `edgeemb` command."""
import sys

from .cli import main

sys.exit(main())
