# Kept equal to the repository's VERSION file (a test checks it).
__version__ = "v0.2.0"
