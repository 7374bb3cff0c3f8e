"""One module per ``hpgen`` subcommand; each defines ``register(subparsers)``."""
