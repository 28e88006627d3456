"""Errors a user can cause and fix. The CLI prints them as one line and exits with code 2."""


class LensError(Exception):
    """Bad input or an unusable model folder: the message says what is wrong and what to do."""


class ModelFolderError(LensError):
    """An exported model folder is missing, half-written or corrupt."""


def require(modules, what: str, extra: str) -> None:
    """Before any work: a LensError naming the install extra if one of `modules` is missing."""
    import importlib.util

    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError, AttributeError):  # a parent missing, or a module set to None
            found = False
        if not found:
            raise LensError(f"{what} needs the {extra} extra: pip install 'lens-explain[{extra}]' (missing {module})")
