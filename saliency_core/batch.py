"""The batch job's command: ``python -m saliency_core.batch`` (and ``torchrun ... -m saliency_core.batch``).

The job itself is :mod:`saliency_core.jobs.batch`; this module only keeps the
documented command short.
"""

import sys

from saliency_core.jobs.batch import main

if __name__ == "__main__":
    sys.exit(main())
