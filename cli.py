"""`python cli.py ...` is the same as the installed `rampsearch ...` command."""
from rampsearch.cli import main

if __name__ == "__main__":
    main()
