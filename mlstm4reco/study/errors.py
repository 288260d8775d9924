"""The error a user's mistake raises."""


class UserError(ValueError):
    """A mistake in the user's input (config, dataset name, missing file, a results folder
    that cannot be written): the CLI prints its message on one line, without a traceback."""
