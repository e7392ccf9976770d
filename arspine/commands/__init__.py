"""One module per ``arspine`` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args)``."""

__all__: list[str] = []
