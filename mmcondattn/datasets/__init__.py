"""Generated datasets in the real COCO / ImageNet formats."""
from .synthetic import SHAPES, make_coco_shapes, make_imagenet_folder

__all__ = ['SHAPES', 'make_coco_shapes', 'make_imagenet_folder']
