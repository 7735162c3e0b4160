"""Every command-line entry: ``medcl`` and its subcommands, the demo and the pipeline step runner (the top layer)."""
