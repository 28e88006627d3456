"""lens: explain what GPT-2-family language models do when they generate text."""
__version__ = "0.1.0"

from .errors import LensError, ModelFolderError  # noqa: E402
from .runtime import Generation, Model, Trace, load  # noqa: E402
from .explanation import Explanation  # noqa: E402

__all__ = ["load", "Model", "Explanation", "Generation", "Trace", "LensError", "ModelFolderError", "__version__"]
