import sys

from dagwright.worker.runtime import main

sys.exit(main())
