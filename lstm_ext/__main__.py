import sys

from .forecast.cli import main

sys.exit(main())
