"""Errors a user can fix. The CLI prints them as one line and exits 2, without a traceback."""


class UserError(Exception):
    """Bad input from the user: a recipe key, a path, a file of the wrong kind.

    The message must say what is wrong and what to do; it is printed as-is.
    """


class RecipeError(UserError):
    """A recipe, profile or `--set` override that cannot be resolved or validated."""


class BitstreamError(UserError):
    """A compressed file that is truncated, corrupted, of another model or another format."""
