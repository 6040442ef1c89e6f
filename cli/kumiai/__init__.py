"""kumiai (組合): infrastructure as code for municipalities that share data centres."""

__version__ = "0.1.0"
