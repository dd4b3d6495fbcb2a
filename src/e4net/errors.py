"""User-facing errors: the CLI prints their message and exits non-zero without a traceback."""


class E4NetError(Exception):
    """A problem with the user's input (a file, a name, a setting) with a message that says what to do."""
