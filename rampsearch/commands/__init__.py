"""CLI subcommands; see rampsearch/cli.py for the contract each module follows."""
