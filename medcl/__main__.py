"""``python -m medcl`` = the ``medcl`` command."""

from medcl.commands.main import main

raise SystemExit(main())
