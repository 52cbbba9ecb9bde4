"""`python -m metaqap_hf ...` is the `metaqap` command (also under `accelerate launch -m metaqap_hf ...`)."""

import sys

from metaqap_cli import main

sys.exit(main())
