"""Video: V-JEPA masks, decoding, clip sampling, video data sets and transforms."""
