"""Reporting: reading result folders into configurations, statistics, plots, the HTML report, and W&B tracking."""
