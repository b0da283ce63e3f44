import sys

from ecosight_daemon.cli import main

sys.exit(main())
