# Tiny GR00T-N1.5 for tests and the demo: gr00t_eagle_3b_libero_10_full_train.py at small widths, CPU-friendly.
# Eagle: SigLIP 32 wide x 2 layers on 32x32 images (patch 8 -> 4x4 grid), pixel shuffle 0.5 -> 4 tokens
# per image, Qwen3 64 wide with 4 layers of which select_layer=2 are kept. Head: DiT 2 blocks (one
# cross-, one self-attention) of 4 heads x 16, VL self-attention 1 block. No pretrained weights.
# The tokenizer is the repo's tiny one (vla.data.tiny_tokenizer: '<image>' = id 4).
# Override paths with --cfg-options, e.g.
#   train_dataloader.dataset.datasets.data_root_path=... and the three tokenizer model_path entries.
_base_ = './gr00t_eagle_3b_libero_10_full_train.py'

IMAGE_SIZE = 32
TOKENIZER = dict(type='PretrainedTokenizer', model_path='work_dirs/demo/tokenizer')
PROMPT = dict(type='ProcessPromptsWithImage', max_len=48, num_images=2, tokens_per_image=4, tokenizer=TOKENIZER)
IMAGE_MEANS = [[123.515625, 116.04492188, 103.59375], [123.515625, 116.04492188, 103.59375]]
IMAGE_STDS = [[58.27148438, 57.02636719, 57.27539062], [58.27148438, 57.02636719, 57.27539062]]

model = dict(
    pretrained_name_or_path=None,
    vlm_backbone=dict(
        vlm_config=dict(
            force_image_size=IMAGE_SIZE,
            image_token_index=4,
            use_pixel_shuffle=True,
            downsample_ratio=0.5,
            mlp_connector_layers=1,
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=8),
            text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                             vocab_size=512, max_position_embeddings=256)),
        select_layer=2),
    vla_head=dict(
        hidden_size=32,
        input_embedding_dim=64,
        num_layers=2,
        backbone_embedding_dim=64,
        num_target_vision_tokens=4,
        max_seq_len=16,
        diffusion_model_cfg=dict(num_attention_heads=4, attention_head_dim=16, output_dim=32, num_layers=2,
                                 dropout=0.0, cross_attention_dim=64),
        vl_self_attention_cfg=dict(num_attention_heads=4, attention_head_dim=16, num_layers=1, dropout=0.0)))

train_dataloader = dict(
    batch_size=4,
    per_device_batch_size=2,
    per_device_num_workers=0,
    dataset=dict(datasets=dict(
        data_root_path='work_dirs/demo/data',
        transforms=[
            dict(type='ProcessParquetInputs', embodiment_id=31,
                 parquet_keys=['observation.state', 'timestamp', 'actions', 'info', 'stats', 'action_masks'],
                 video_keys=['observation.images.image', 'observation.images.wrist_image'],
                 name_mappings={'observation.state': ['states'], 'actions': ['actions']}),
            dict(type='ParquetPrompter'),
            PROMPT,
            dict(type='ResizeImages', height=IMAGE_SIZE, width=IMAGE_SIZE),
            dict(type='NormalizeImages', means=IMAGE_MEANS, stds=IMAGE_STDS),
            dict(type='NormalizeStatesAndActions', action_dim=14, state_key='proprio', action_key='action',
                 use_quantiles=False)
        ])))

runner = dict(
    max_epochs=2,
    learning_rate=1e-3,
    tokenizer=TOKENIZER,
    metric=dict(_delete_=True, type='VLAMetric', active_trackers=('jsonl', ), run_dir='work_dirs',
                grad_accumulation_steps=1, window_size=1),
    enable_gradient_checkpointing=False,
    enable_mixed_precision_training=False)

eval = dict(
    resize_size=IMAGE_SIZE,
    num_trials_per_task=1,
    dataset=dict(transforms=[
        dict(type='ProcessLiberoEvalInputs', embodiment_id=31, img_keys=['agentview_image', 'robot0_eye_in_hand_image']),
        dict(type='TransformImage', image_resize_strategy='resize-naive',
             input_sizes=[[3, IMAGE_SIZE, IMAGE_SIZE], [3, IMAGE_SIZE, IMAGE_SIZE]], means=IMAGE_MEANS, stds=IMAGE_STDS),
        PROMPT,
        dict(type='LiberoProprioFromInputs', use_quantiles=False, pos_key='robot0_eef_pos',
             quat_key='robot0_eef_quat', gripper_key='robot0_gripper_qpos', out_key='states'),
    ]))
