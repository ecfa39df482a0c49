"""``python -m retina.checkpoints <run_dir>``: list a run's checkpoints and verify each
(exit status 1 if any fails to verify). See ``retina.checkpoint.listing``."""

import sys

from retina.checkpoint.listing import main

if __name__ == "__main__":
    sys.exit(main())
