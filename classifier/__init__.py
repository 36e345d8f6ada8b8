"""Leukoscope's ML core: finds leukocytes in smear photographs and classifies them.

Plain Python, NumPy, OpenCV and TensorFlow/Keras; nothing here knows about Django, HTTP or Celery.
TensorFlow is imported lazily inside the functions that need it, so importing this package is cheap.
"""
