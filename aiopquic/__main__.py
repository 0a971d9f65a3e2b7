"""``python -m aiopquic``: see :mod:`aiopquic.cli`."""

from .cli import main

raise SystemExit(main())
