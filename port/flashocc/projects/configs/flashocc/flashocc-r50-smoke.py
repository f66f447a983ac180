# FlashOCC CPU smoke configuration (FlashOCC Ascend porting kit).
#
# flashocc-r50's architecture -- ResNet image backbone, LSS view transform with
# bev_pool_v3, BEV encoder, channel-to-height occupancy head -- reduced so that
# two CPU processes over gloo train it in minutes on the kit's synthetic
# Occ3D-nuScenes set (`python3 tools/kit.py synth`, images of 352x198), and
# learn the scene layout only if the camera geometry, the view transform and
# the BEV pooling are right. To learn that fast from scratch, the depth
# distribution is supervised with LiDAR depth (FlashOCC's BEVDepthOCC and
# LSSViewTransformerBEVDepth, as in the depth-supervised FlashOCC configs).
# Nothing is downloaded: no pretrained backbone, no checkpoint.
# Launch: bash test/train_smoke_flashocc_cpu.sh (from the FlashOCC root).
_base_ = ['./flashocc-r50.py']

data_root = 'data/nuscenes-synthetic/'

data_config = {
    'cams': [
        'CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_BACK_LEFT',
        'CAM_BACK', 'CAM_BACK_RIGHT'
    ],
    'Ncams': 6,
    'input_size': (128, 352),
    'src_size': (198, 352),
    'resize': (-0.06, 0.11),
    'rot': (-5.4, 5.4),
    'flip': True,
    'crop_h': (0.0, 0.0),
    'resize_test': 0.00,
}

grid_config = {
    'x': [-40, 40, 0.4],
    'y': [-40, 40, 0.4],
    'z': [-1, 5.4, 6.4],
    'depth': [1.0, 45.0, 1.0],
}

numC_Trans = 16

model = dict(
    type='BEVDepthOCC',
    img_backbone=dict(
        depth=18,
        base_channels=32,  # ResNet-18 at half width
        out_indices=(2, 3),
        with_cp=False,
        pretrained=None),
    img_neck=dict(in_channels=[128, 256], out_channels=64),
    img_view_transformer=dict(
        type='LSSViewTransformerBEVDepth',
        grid_config=grid_config,
        input_size=data_config['input_size'],
        in_channels=64,
        out_channels=numC_Trans,
        loss_depth_weight=1.0,
        depthnet_cfg=dict(use_dcn=False, use_aspp=False)),
    img_bev_encoder_backbone=dict(
        numC_input=numC_Trans,
        num_channels=[numC_Trans * 2, numC_Trans * 4, numC_Trans * 8]),
    img_bev_encoder_neck=dict(
        in_channels=numC_Trans * 8 + numC_Trans * 2,
        out_channels=32),
    occ_head=dict(in_dim=32, out_dim=32))

bda_aug_conf = dict(
    rot_lim=(-0., 0.),
    scale_lim=(1., 1.),
    flip_dx_ratio=0.5,
    flip_dy_ratio=0.5)

train_pipeline = [
    dict(type='PrepareImageInputs', is_train=True, data_config=data_config,
         sequential=False),
    dict(type='LoadAnnotationsBEVDepth', bda_aug_conf=bda_aug_conf,
         classes={{_base_.class_names}}, is_train=True),
    dict(type='LoadOccGTFromFile'),
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=5, use_dim=5,
         file_client_args=dict(backend='disk')),
    dict(type='PointToMultiViewDepth', downsample=1, grid_config=grid_config),
    dict(type='DefaultFormatBundle3D', class_names={{_base_.class_names}}),
    dict(type='Collect3D', keys=['img_inputs', 'gt_depth', 'voxel_semantics',
                                 'mask_lidar', 'mask_camera'])
]

test_pipeline = [
    dict(type='PrepareImageInputs', data_config=data_config, sequential=False),
    dict(type='LoadAnnotationsBEVDepth', bda_aug_conf=bda_aug_conf,
         classes={{_base_.class_names}}, is_train=False),
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=5, use_dim=5,
         file_client_args=dict(backend='disk')),
    dict(type='MultiScaleFlipAug3D', img_scale=(1333, 800), pts_scale_ratio=1,
         flip=False,
         transforms=[
             dict(type='DefaultFormatBundle3D',
                  class_names={{_base_.class_names}}, with_label=False),
             dict(type='Collect3D', keys=['points', 'img_inputs'])
         ])
]

data = dict(
    samples_per_gpu=2,
    workers_per_gpu=1,
    train=dict(
        data_root=data_root,
        ann_file=data_root + 'bevdetv2-nuscenes_infos_train.pkl',
        pipeline=train_pipeline),
    val=dict(
        data_root=data_root,
        ann_file=data_root + 'bevdetv2-nuscenes_infos_val.pkl',
        pipeline=test_pipeline),
    test=dict(
        data_root=data_root,
        ann_file=data_root + 'bevdetv2-nuscenes_infos_val.pkl',
        pipeline=test_pipeline))

optimizer = dict(type='AdamW', lr=2e-3, weight_decay=1e-2)
lr_config = dict(
    policy='step',
    warmup='linear',
    warmup_iters=20,
    warmup_ratio=0.01,
    step=[1000, ])
runner = dict(type='EpochBasedRunner', max_epochs=10)
custom_hooks = []  # an EMA with 10k warm-up updates would barely move in a smoke run
load_from = None
evaluation = dict(interval=1000, pipeline=test_pipeline)
checkpoint_config = dict(interval=1, max_keep_ckpts=1)
