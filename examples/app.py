"""Your own Bokeh server app with lens's views: `bokeh serve examples/app.py --args MODEL`.

The model loads once per server process (`shared_explainer`), each browser session gets a prompt box
and the report's views (`add_explainer`), explanations run off the event loop, and a failing request
is shown to its own session only. Add your own widgets around it like in any Bokeh document.
"""
import sys

from bokeh.io import curdoc
from bokeh.models import Div

from lens.serve import add_explainer, shared_explainer
from lens.settings import ServeSettings

model = sys.argv[1] if len(sys.argv) > 1 else "smollm2"
doc = curdoc()
doc.title = "My lens app"
doc.add_root(Div(text="<h2>My lens app</h2>", name="app_title", disable_math=True))
add_explainer(doc, shared_explainer(model), ServeSettings(max_prompt_tokens=48, max_new_tokens=12),
              prompt="The capital of France is")
