"""lens: explain what decoder-only language models (GPT-2, Llama, Qwen, Gemma, ...) do when they generate text."""
from .version import __version__  # noqa: E402

from .errors import LensError, ModelFolderError  # noqa: E402
from .runtime import Generation, Model, Trace, load  # noqa: E402
from .store import ModelFolder  # noqa: E402
from .explanation import Explanation  # noqa: E402
from .settings import ExplainSettings  # noqa: E402
from .pipeline import Explainer  # noqa: E402

__all__ = ["load", "Model", "Explainer", "Explanation", "ExplainSettings", "Generation", "Trace",
           "ModelFolder", "LensError", "ModelFolderError", "__version__"]
