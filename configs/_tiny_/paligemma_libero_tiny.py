# Toy widths shared by the tiny π0 and π0.5 configs (tests and the demo): PaliGemma + Gemma expert at
# CPU size, data from `make demo` (work_dirs/demo/data) with its tiny tokenizer (vocab 512).
# Not a config on its own: listed after the full config in a tiny config's `_base_`.
WIDTH = 32        # expert width == proj_width
IMAGE_SIZE = 56   # SigLIP patch 14 -> 16 tokens per camera
VOCAB = 512
IMAGE_MEANS = [[123.515625, 116.04492188, 103.59375], [123.515625, 116.04492188, 103.59375]]
IMAGE_STDS = [[58.27148438, 57.02636719, 57.27539062], [58.27148438, 57.02636719, 57.27539062]]

model = dict(
    vlm_backbone=dict(vlm_config=dict(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, vocab_size=VOCAB),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           patch_size=14, image_size=IMAGE_SIZE),
        projection_dim=64, image_token_id=VOCAB)),
    llm_expert=dict(llm_config=dict(hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, num_key_value_heads=1, head_dim=16)),
    proj_width=WIDTH,
    state_proj=dict(in_dim=32, out_dim=WIDTH),  # openpi's padded widths, as the full configs
    action_in_proj=dict(in_dim=32, out_dim=WIDTH),
    action_out_proj=dict(in_dim=WIDTH, out_dim=32),
    action_time_mlp_in=dict(in_dim=2 * WIDTH, out_dim=WIDTH),
    action_time_mlp_out=dict(in_dim=WIDTH, out_dim=WIDTH),
    num_inference_steps=5,
    pretrained_name_or_path=None)

train_dataloader = dict(
    batch_size=4,
    per_device_batch_size=4,
    per_device_num_workers=0,
    dataset=dict(datasets=dict(
        data_root_path='work_dirs/demo/data',
        transforms=[
            dict(type='ProcessParquetInputs',
                 parquet_keys=['observation.state', 'timestamp', 'actions', 'info', 'stats', 'action_masks'],
                 video_keys=['observation.images.image', 'observation.images.wrist_image'],
                 name_mappings={'observation.state': ['states'], 'actions': ['actions']}),
            dict(type='ParquetPrompter'),
            dict(type='ProcessPrompts', max_len=32,
                 tokenizer=dict(type='PretrainedTokenizer', model_path='work_dirs/demo/tokenizer')),
            dict(type='ResizeImages', height=IMAGE_SIZE, width=IMAGE_SIZE),
            dict(type='NormalizeImages', means=IMAGE_MEANS, stds=IMAGE_STDS),
            dict(type='NormalizeStatesAndActions', action_dim=14, state_key='proprio', action_key='action',
                 use_quantiles=False)
        ])))

runner = dict(
    type='DDPTrainRunner',
    max_epochs=1,
    learning_rate=1e-3,
    metric=dict(active_trackers=('jsonl',)),
    enable_gradient_checkpointing=False,
    enable_mixed_precision_training=False)

eval = dict(
    resize_size=IMAGE_SIZE,
    dataset=dict(transforms=[
        dict(type='ProcessLiberoEvalInputs', img_keys=['agentview_image', 'robot0_eye_in_hand_image']),
        dict(type='TransformImage', image_resize_strategy='resize-naive',
             input_sizes=[[3, IMAGE_SIZE, IMAGE_SIZE], [3, IMAGE_SIZE, IMAGE_SIZE]], means=IMAGE_MEANS,
             stds=IMAGE_STDS),
        dict(type='LiberoPromptFromInputs',
             tokenizer=dict(type='PretrainedTokenizer', model_path='work_dirs/demo/tokenizer')),
        dict(type='LiberoProprioFromInputs', use_quantiles=False, pos_key='robot0_eef_pos',
             quat_key='robot0_eef_quat', gripper_key='robot0_gripper_qpos', out_key='states'),
    ]))
