# FluxVLA's pi0 LIBERO config (its LIBERO guide: 模型/数据/训练配置), shrunk for the trainer tests:
# same types, keys and runner parameters; a test policy, 32x32 images, short prompts.
custom_imports = dict(imports=['tests.trainer.tiny_model'])

model = dict(type='TrainerTestPolicy', state_dim=8, action_dim=14, chunk_length=10, hidden=32)

train_dataloader = dict(
    batch_size=4,
    per_device_batch_size=2,
    per_device_num_workers=0,
    dataset=dict(
        type='DistributedRepeatingDataset',
        name_mappings={'observation.state': ['proprio'], 'action': ['action']},
        statistic_keys=['observation.state', 'timestamp', 'action'],
        statistic_name='libero_10_no_noops',
        datasets=dict(
            type='ParquetDataset',
            data_root_path='work_dirs/demo/data',
            transforms=[
                dict(type='ProcessParquetInputs',
                     parquet_keys=['observation.state', 'timestamp', 'actions', 'info', 'stats', 'action_masks'],
                     video_keys=['observation.images.image', 'observation.images.wrist_image'],
                     name_mappings={'observation.state': ['states'], 'actions': ['actions']}),
                dict(type='ParquetPrompter'),
                dict(type='ProcessPrompts', max_len=16,
                     tokenizer=dict(type='PretrainedTokenizer', model_path='work_dirs/demo/tokenizer')),
                dict(type='ResizeImages', height=32, width=32),
                dict(type='NormalizeImages',
                     means=[[123.515625, 116.04492188, 103.59375], [123.515625, 116.04492188, 103.59375]],
                     stds=[[58.27148438, 57.02636719, 57.27539062], [58.27148438, 57.02636719, 57.27539062]]),
                dict(type='NormalizeStatesAndActions', action_dim=14, state_key='proprio', action_key='action',
                     use_quantiles=False)
            ],
            action_window_size=10, action_key='action', use_delta=False,
            statistic_name='libero_10_no_noops', window_start_idx=0)))

runner = dict(
    type='DDPTrainRunner',
    max_epochs=2,
    learning_rate=1e-3,
    weight_decay=0.0,
    max_grad_norm=1.0,
    sampler=None,
    tokenizer=dict(type='PretrainedTokenizer', model_path='work_dirs/demo/tokenizer'),
    collator=dict(
        type='DictCollator',
        keys=['states', 'observation.eepose', 'timestamp', 'images', 'img_masks', 'lang_tokens', 'lang_masks',
              'actions', 'action_masks'],
        meta_keys=['task_description', 'prompt', 'info', 'stats']),
    metric=dict(
        type='VLAMetric',
        active_trackers=('jsonl', 'wandb'),
        run_dir='work_dirs',
        wandb_project='FluxVLA',
        wandb_entity='limx',
        grad_accumulation_steps=1,
        window_size=1),
    lr_scheduler_type='constant',
    warmup_ratio=0.0,
    enable_gradient_checkpointing=False,
    enable_mixed_precision_training=False,
    mixed_precision_dtype='bf16',
    sharding_strategy='full-shard',
    change_key_name=False,
    save_epoch_interval=1)

eval = dict(
    type='LiberoEvalRunner',
    task_suite_name='libero_10',
    model_family='pi0',
    eval_chunk_size=10,
    resize_size=224,
    num_trials_per_task=1,
    num_steps_wait=10,
    seed=7)
