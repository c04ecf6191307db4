"""The pinned stack: compiled mmcv ops, torchvision ops, and the mm* packages import and run."""
import torch


def test_mmcv_compiled_ops_run():
    from mmcv.ops import RoIAlign, nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feat = torch.arange(16.).view(1, 1, 4, 4)
    out = RoIAlign((2, 2), spatial_scale=1., sampling_ratio=1)(feat, torch.tensor([[0, 0, 0, 4, 4.]]))
    assert out.shape == (1, 1, 2, 2) and torch.isfinite(out).all()


def test_torchvision_ops_and_mm_packages_import():
    import mmdet
    import mmengine
    import mmpretrain
    import mmpretrain.models  # noqa: F401  needs a working torchvision
    import torchvision
    keep = torchvision.ops.nms(torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]]),
                               torch.tensor([1., .5]), 0.5)
    assert keep.tolist() == [0]
    assert (mmdet.__version__, mmpretrain.__version__, mmengine.__version__) == \
        ('3.3.0', '1.2.0', '0.10.7')


def test_package_imports_and_registers():
    import mmcondattn
    assert mmcondattn.__version__
    assert callable(mmcondattn.fold_conditioning)
