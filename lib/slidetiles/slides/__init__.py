"""Whole-slide images: synthetic test slides with their ground truth (:mod:`slidetiles.slides.synthetic`)."""

from slidetiles.slides.background import (
    DEFAULT_GRAYSPACE_FRACTION,
    DEFAULT_GRAYSPACE_THRESHOLD,
    DEFAULT_WHITESPACE_FRACTION,
    DEFAULT_WHITESPACE_THRESHOLD,
    background_fractions,
    background_keep,
    background_reasons,
    filter_downsample,
)
from slidetiles.slides.qc import blur_mask, otsu_level, otsu_mask, qc_mask, qc_masks, tile_keep_from_mask
from slidetiles.slides.roi import ROI, find_roi_file, load_rois, roi_keep_mask
from slidetiles.slides.synthetic import Scene, SyntheticSlide, make_scene, write_synthetic_slide

__all__ = [
    "ROI",
    "find_roi_file",
    "load_rois",
    "roi_keep_mask",
    "Scene",
    "SyntheticSlide",
    "make_scene",
    "write_synthetic_slide",
    "DEFAULT_GRAYSPACE_FRACTION",
    "DEFAULT_GRAYSPACE_THRESHOLD",
    "DEFAULT_WHITESPACE_FRACTION",
    "DEFAULT_WHITESPACE_THRESHOLD",
    "background_fractions",
    "background_keep",
    "background_reasons",
    "filter_downsample",
    "blur_mask",
    "otsu_level",
    "otsu_mask",
    "qc_mask",
    "qc_masks",
    "tile_keep_from_mask",
]
