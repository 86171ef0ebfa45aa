"""`python -m hw.finn.autofold`: see cli.py."""
from hw.finn.autofold.cli import main

raise SystemExit(main())
