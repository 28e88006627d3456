"""Bokeh views of an Explanation (each a function from data to a layout) and the HTML report."""
from .report import report_html, report_layout, save_report
from .views import activations_view, factors_view, rankings_view, saliency_view, watch_view

__all__ = ["saliency_view", "rankings_view", "watch_view", "factors_view", "activations_view",
           "report_layout", "report_html", "save_report"]
