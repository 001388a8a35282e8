"""fer_dist: distributed ResNet-18 emotion classifiers on paired visible/infrared face images."""

__version__ = "0.1.0"

CLASSES = ("Angry", "Happy", "Neutral", "Sad", "Surprise")
"""VIRI's class folders, in index order."""
