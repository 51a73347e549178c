"""Run reports: results.json (written and validated), report.md with its PNG plots, and
the results tables for the terminal."""
from ptcore.report.markdown import make_plots, render_report, write_report
from ptcore.report.plots import accuracy_curve, accuracy_heatmap, learning_curves, method_comparison
from ptcore.report.results import read_results, validate_results, write_results
from ptcore.report.tables import markdown_table, text_table

__all__ = [
    "accuracy_heatmap", "accuracy_curve", "learning_curves", "method_comparison",
    "validate_results", "write_results", "read_results",
    "make_plots", "render_report", "write_report", "markdown_table", "text_table",
]
