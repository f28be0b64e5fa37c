# π0.5 full finetune on LIBERO-10 (FluxVLA's LIBERO guide config; paths are placeholders).
# Differences from π0 (see vla/models/pi05.py): adaRMS time conditioning in the expert, state as discrete
# prompt tokens. So the time MLP is proj_width -> proj_width and the openpi names are time_mlp_in/out; the
# guide's state_proj stays for its config surface (its in_dim is the state size) and holds no weights.
model = dict(
    type='PI05FlowMatching',
    vlm_backbone=dict(
        type='PaliGemma',
        vlm_backbone_id='paligemma_3b_pt_224',
        vlm_config=dict()),
    proj_width=1024,
    n_action_steps=10,
    # openpi's π0.5 pads state and actions to 32 inside the model: 32 state tokens in the prompt and a
    # 32-wide flow; the data's widths are state_dim 8 and action_dim 7 (inputs padded, outputs cut back).
    state_dim=8,
    action_dim=7,
    max_state_dim=32,
    max_action_dim=32,
    state_proj=dict(type='LinearProjector', in_dim=8, out_dim=1024),  # holds no weights: in_dim = state_dim
    action_in_proj=dict(type='LinearProjector', in_dim=32, out_dim=1024),
    action_out_proj=dict(type='LinearProjector', in_dim=1024, out_dim=32),
    action_time_mlp_in=dict(type='LinearProjector', in_dim=1024, out_dim=1024),
    action_time_mlp_out=dict(type='LinearProjector', in_dim=1024, out_dim=1024),
    llm_expert=dict(
        type='GemmaLLMBackbone',
        llm_backbone_id='gemma-2b_causal',
        llm_family='gemma',
        llm_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=18,
                        num_attention_heads=8, num_key_value_heads=1, head_dim=256)),
    freeze_vlm_backbone=False,
    num_inference_steps=10,
    pretrained_name_or_path=
    '/path/to/cache/openpi/openpi-assets/checkpoints/pi05_libero_pytorch/model.safetensors',
    name_mapping={
        'vlm_backbone.vlm.model.language_model':
        'model.paligemma_with_expert.paligemma.model.language_model',
        'vlm_backbone.vlm.model.vision_tower':
        'model.paligemma_with_expert.paligemma.model.vision_tower',
        'vlm_backbone.vlm.model.multi_modal_projector':
        'model.paligemma_with_expert.paligemma.model.multi_modal_projector',
        'action_time_mlp_in.projector': 'model.time_mlp_in',
        'action_time_mlp_out.projector': 'model.time_mlp_out',
        'llm_expert.llm.model':
        'model.paligemma_with_expert.gemma_expert.model',
        'action_in_proj.projector': 'model.action_in_proj',
        'action_out_proj.projector': 'model.action_out_proj'
    })

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

runner = dict(
    type='FSDPTrainRunner',
    max_epochs=24,
    learning_rate=2e-5,
    weight_decay=0.0,
    max_grad_norm=1.0,
    collator=dict(
        type='DictCollator',
        keys=['states', 'observation.eepose', 'timestamp', 'images', 'img_masks', 'lang_tokens', 'lang_masks',
              'actions', 'action_masks'],
        meta_keys=['task_description', 'prompt', 'info', 'stats']),
    sampler=None,
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
    enable_gradient_checkpointing=True,
    enable_mixed_precision_training=True,
    mixed_precision_dtype='bf16',
    sharding_strategy='full-shard',
    change_key_name=False)

eval = dict(
    type='LiberoEvalRunner',
    task_suite_name='libero_10',
    model_family='pi0',
    eval_chunk_size=10,
    resize_size=224,
    num_trials_per_task=50,
    num_steps_wait=10,
    seed=7,
    dataset=dict(
        type='LiberoParquetEvalDataset',
        transforms=[
            dict(type='ProcessLiberoEvalInputs', img_keys=['agentview_image', 'robot0_eye_in_hand_image']),
            dict(type='TransformImage', image_resize_strategy='resize-naive',
                 input_sizes=[[3, 224, 224], [3, 224, 224]], means=IMAGE_MEANS, stds=IMAGE_STDS),
            dict(type='LiberoPromptFromInputs',
                 tokenizer=dict(type='PretrainedTokenizer', model_path='/path/to/checkpoints/pi0')),
            dict(type='LiberoProprioFromInputs', use_quantiles=False, pos_key='robot0_eef_pos',
                 quat_key='robot0_eef_quat', gripper_key='robot0_gripper_qpos', out_key='states'),
        ]),
    denormalize_action=dict(type='DenormalizeLiberoAction', use_quantiles=False))
