import sys

from natlearn.cli import main

sys.exit(main())
