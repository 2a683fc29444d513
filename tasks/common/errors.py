"""Errors that describe bad input. They end one avatar's row, never the batch."""


class AvatarInputError(Exception):
    """An expected failure caused by a row's input; its message is shown to the user as is."""
