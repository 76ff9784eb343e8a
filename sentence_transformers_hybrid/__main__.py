"""``python -m sentence_transformers_hybrid`` = ``st-hybrid``."""

import sys

from .cli import main

sys.exit(main())
