"""Errors a user can cause and fix. The CLI prints them as one line and exits with code 2."""


class LensError(Exception):
    """Bad input or an unusable model folder: the message says what is wrong and what to do."""


class ModelFolderError(LensError):
    """An exported model folder is missing, half-written or corrupt."""
