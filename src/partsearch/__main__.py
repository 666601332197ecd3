import sys

from partsearch.cli import main

sys.exit(main())
