"""Whole-slide images: synthetic test slides with their ground truth (:mod:`slidetiles.slides.synthetic`)."""

from slidetiles.slides.synthetic import Scene, SyntheticSlide, make_scene, write_synthetic_slide

__all__ = ["Scene", "SyntheticSlide", "make_scene", "write_synthetic_slide"]
