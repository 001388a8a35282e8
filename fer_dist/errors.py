"""The one error type a user sees: the CLI prints its message on one line and exits non-zero."""


class UserError(Exception):
    """A mistake in the user's input (file, key or value) with what to do about it.

    The message names the offending file/key/value and the fix; the CLI prints it without a
    traceback and exits with status 2.
    """

    exit_code = 2
