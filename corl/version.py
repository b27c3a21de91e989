"""corl's version, in a leaf module so any layer can cite it without importing the package root (whose
lazy attributes reach the API)."""

__version__ = "0.1.0"
