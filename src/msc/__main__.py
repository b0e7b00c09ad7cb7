import sys

from msc.cli.main import main

sys.exit(main())
