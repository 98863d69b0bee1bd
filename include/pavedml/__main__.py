import sys

from pavedml.cli import main

sys.exit(main())
