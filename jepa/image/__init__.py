"""Image-specific data pieces: mask collators (and the image datasets and transforms)."""
