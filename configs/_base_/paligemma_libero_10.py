# What the π0 and π0.5 LIBERO-10 configs share (FluxVLA's LIBERO guide: 数据配置): the LeRobot data
# pipeline with PaliGemma's image statistics and tokenizer, the eval transforms, runner and eval settings.
_base_ = ['./libero_10_runner.py', './libero_10_eval.py']

IMAGE_MEANS = [[123.515625, 116.04492188, 103.59375], [123.515625, 116.04492188, 103.59375]]
IMAGE_STDS = [[58.27148438, 57.02636719, 57.27539062], [58.27148438, 57.02636719, 57.27539062]]

train_dataloader = dict(
    batch_size=128,
    per_device_batch_size=8,
    per_device_num_workers=4,
    dataset=dict(
        type='DistributedRepeatingDataset',
        name_mappings={'observation.state': ['proprio'], 'action': ['action']},
        statistic_keys=['observation.state', 'timestamp', 'action'],
        statistic_name='libero_10_no_noops',
        datasets=dict(
            type='ParquetDataset',
            data_root_path='/path/to/data/LIBERO_lerobot/libero_10_no_noops_1.0.0_lerobot',
            transforms=[
                dict(type='ProcessParquetInputs',
                     parquet_keys=['observation.state', 'timestamp', 'actions', 'info', 'stats', 'action_masks'],
                     video_keys=['observation.images.image', 'observation.images.wrist_image'],
                     name_mappings={'observation.state': ['states'], 'actions': ['actions']}),
                dict(type='ParquetPrompter'),
                dict(type='ProcessPrompts',
                     tokenizer=dict(type='PretrainedTokenizer', model_path='/path/to/checkpoints/pi0')),
                dict(type='ResizeImages', height=224, width=224),
                dict(type='NormalizeImages', means=IMAGE_MEANS, stds=IMAGE_STDS),
                dict(type='NormalizeStatesAndActions', action_dim=14, state_key='proprio', action_key='action',
                     use_quantiles=False)
            ],
            action_window_size=10,
            action_key='action',
            use_delta=False,
            statistic_name='libero_10_no_noops',
            window_start_idx=0)))

eval = dict(
    dataset=dict(
        transforms=[
            dict(type='ProcessLiberoEvalInputs', img_keys=['agentview_image', 'robot0_eye_in_hand_image']),
            dict(type='TransformImage', image_resize_strategy='resize-naive',
                 input_sizes=[[3, 224, 224], [3, 224, 224]], means=IMAGE_MEANS, stds=IMAGE_STDS),
            dict(type='LiberoPromptFromInputs',
                 tokenizer=dict(type='PretrainedTokenizer', model_path='/path/to/checkpoints/pi0')),
            dict(type='LiberoProprioFromInputs', use_quantiles=False, pos_key='robot0_eef_pos',
                 quat_key='robot0_eef_quat', gripper_key='robot0_gripper_qpos', out_key='states'),
        ]))
