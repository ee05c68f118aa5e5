"""Pascal VOC 2007 transfer (``natlearn transfer``): multi-label classification
(:mod:`~natlearn.evaluate.voc.classification`), Faster R-CNN detection
(:mod:`~natlearn.evaluate.voc.detection`), and the devkit's average precision both use
(:mod:`~natlearn.evaluate.voc.average_precision`)."""
