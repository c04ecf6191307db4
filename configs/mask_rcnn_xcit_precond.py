# The headline model: Mask R-CNN with a preconditioned XCiT-S12/16 backbone on COCO, official
# XCiT detection recipe (36 epochs, multi-scale crop, AdamW 1e-4, SyncBN), stock mmdet heads.
#   tools/dist_train.sh configs/mask_rcnn_xcit_precond.py 8
# The backbone starts from mmpretrain's public ImageNet-1k XCiT-S12/16, trained without
# conditioning; for a conditioned ImageNet start see
# docs/get_started.md#pretrain-on-imagenet-then-fine-tune-on-coco
_base_ = './xcit/mask-rcnn_xcit-s12-p16_precond_fpn_ms-crop-3x_coco.py'
