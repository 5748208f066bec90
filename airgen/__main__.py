import sys

from airgen.cli import main

sys.exit(main())
