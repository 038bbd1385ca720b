"""Errors a user can fix. The CLI prints them as one line and exits 2, without a traceback."""


class UserError(Exception):
    """Bad input from the user: a recipe key, a path, a file of the wrong kind.

    The message must say what is wrong and what to do; it is printed as-is.
    """

    def __init__(self, message: str = "") -> None:
        # A DataLoader worker's exception is re-raised in the main process as
        # type(e)("Caught ... in DataLoader worker process N.\nOriginal Traceback ...
        # <module>.<Class>: <message>"): keep the one line the worker raised.
        marker = f"\n{type(self).__module__}.{type(self).__qualname__}: "
        if message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


class RecipeError(UserError):
    """A recipe, profile or `--set` override that cannot be resolved or validated."""


class BitstreamError(UserError):
    """A compressed file that is truncated, corrupted, of another model or another format."""
