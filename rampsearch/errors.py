"""User-facing errors: the CLI prints their message (no traceback) and exits with status 2."""


class UserError(ValueError):
    """Bad input from the user; the message names what is wrong and what would be right."""
