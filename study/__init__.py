"""dejavu-study: measure déjà vu memorization of image encoders on Ray."""

__version__ = "0.1.0"
