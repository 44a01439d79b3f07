"""Annotation: the object vocabulary and the detections an annotator keeps (the annotate stage's parts)."""
