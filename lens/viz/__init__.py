"""Bokeh views of an Explanation (each a function from data to a layout) and the HTML report that
arranges them."""
from .logit_lens import layer_predictions_view, rankings_view, ranks_in_text_view, watch_view
from .neurons import activations_view, factors_view
from .report import header_view, report_html, report_layout, save_report
from .text import saliency_view

__all__ = ["header_view", "saliency_view", "ranks_in_text_view", "rankings_view", "layer_predictions_view", "watch_view",
           "factors_view", "activations_view", "report_layout", "report_html", "save_report"]
