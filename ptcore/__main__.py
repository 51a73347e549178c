import sys

from ptcore.cli import main

sys.exit(main())
