import sys

from arspine.cli import main

sys.exit(main())
