"""One module per `partsearch` command: `add_arguments(parser)` and `run(args) -> int`."""
