"""What every view shares: colours, how a token is written, readable text on any fill (WCAG
contrast), and the one way to put our own HTML on the page (escaped, never typeset)."""
from __future__ import annotations

from pathlib import Path

from bokeh.models import Div, Grid, PlainText

CHAR_W = 8.4          # px per character of the 14 px monospace token text
INPUT_COLOR, OUTPUT_COLOR = "#f0f0f0", "#fff4d6"          # token boxes: prompt, generated
INPUT_EDGE, OUTPUT_EDGE = "#bbbbbb", "#d08c00"
SALIENCY_COLOR = "#8c2d04"
EXCLUDED_COLOR = "#d9d9d9"                                # positions an analysis left out
SPARK_BACKGROUND, PROMPT_SHADE = "#fafafa", "#000000"
DARK_TEXT, LIGHT_TEXT = "#000000", "#ffffff"
NOTE_STYLE = "color:#555;font-size:12px"


def text_div(text: str, **kw) -> Div:
    """A Div whose HTML we built (untrusted parts escaped). MathJax is off: a prompt holding
    `$$\\href{javascript:...}$$` must stay text, and html.escape alone does not stop TeX."""
    return Div(text=text, disable_math=True, **kw)


def plain(text: str):
    """Text for a property Bokeh would typeset as TeX (titles, axis and tick labels) when it holds
    delimiters such as $$...$$ or \\[...\\]: wrapped in PlainText, which never is. (Without a $ or a
    backslash there is no delimiter, and a plain string costs no extra model.)"""
    return PlainText(text=text) if ("$" in text or "\\" in text) else text


MAX_SHOWN = 40        # characters of a token drawn in a box or a label; the details panel shows it all


def display(token: str) -> str:
    """A token as every view writes it (boxes, axes, lists: one rule): every space as ␣, so ' Paris'
    and 'Paris' differ visibly and a newline-plus-indent reads ↵␣␣␣; newlines and tabs as ↵ and ⇥; an
    empty token as ∅; a very long token cut with … (a 5,000-character token is one box)."""
    text = token.replace("\n", "↵").replace("\t", "⇥").replace("\r", "").replace(" ", "␣") or "∅"
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 1] + "…"


def label(token: str) -> str:
    """A token standing alone (axis labels, lists): `display`'s rule."""
    return display(token)


def _channel(c: float) -> float:
    c /= 255
    return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4


def luminance(rgb) -> float:
    """WCAG relative luminance of an (r, g, b) in 0..255."""
    r, g, b = (_channel(float(v)) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a, b) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))


def text_color(fill) -> str:
    """Black or white, whichever contrasts more with `fill` (hex or rgb): always >= 4.58:1."""
    fill = rgb(fill) if isinstance(fill, str) else fill
    return DARK_TEXT if contrast(fill, (0, 0, 0)) >= contrast(fill, (255, 255, 255)) else LIGHT_TEXT


JS_DIR = Path(__file__).with_name("js")


def js(*names: str) -> str:
    """The browser code of `lens/viz/js/NAME.js` files, joined (helpers first): every view's
    CustomJS code lives in those files, none in Python strings."""
    return "\n".join((JS_DIR / f"{name}.js").read_text() for name in names)


def saveable(p, name: str):
    """A figure a reader can save as PNG for a paper (Bokeh's save tool, in a toolbar that shows while
    the mouse is over the figure). Returns the figure."""
    from bokeh.models import SaveTool

    p.add_tools(SaveTool(filename=f"lens-{name}"))
    p.toolbar_location = "right"
    p.toolbar.autohide = True
    p.toolbar.logo = None
    return p


def save_buttons_only(layout):
    """Hide every toolbar button but the save tool's (hover and tap work without theirs; the narrow
    toolbar of a one-line text otherwise folds the save button into an overflow menu). Returns the layout."""
    from bokeh.models import Plot, SaveTool

    for p in layout.select({"type": Plot}):
        for tool in p.tools:
            if not isinstance(tool, SaveTool):
                tool.visible = False
    return layout


def drop_grids(p) -> None:
    """Remove a figure's grid lines (cell views draw their own): hidden grids still cost models to
    build and serialise."""
    p.center = [r for r in p.center if not isinstance(r, Grid)]
