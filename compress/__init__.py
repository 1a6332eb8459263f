"""Network slimming and deployment compression for convolutional networks.

Importing this package stays cheap (no torch) so that `compress --help` is fast.
"""

__version__ = "0.1.0"
