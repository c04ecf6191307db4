"""Generated datasets in the real COCO / ImageNet formats, and Fashion-MNIST prepared for
mmpretrain's stock ``FashionMNIST`` dataset."""
from .fashion_mnist import IdxError, check_idx, find_sources, prepare_fashion_mnist
from .synthetic import SHAPES, make_coco_shapes, make_imagenet_folder

__all__ = [
    'SHAPES', 'make_coco_shapes', 'make_imagenet_folder', 'IdxError', 'check_idx', 'find_sources',
    'prepare_fashion_mnist'
]
