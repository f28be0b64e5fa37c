# Tiny π0 LoRA finetune: the tiny model with the LoRA settings of the full LoRA config.
_base_ = './pi0_paligemma_libero_10_full_finetune_tiny.py'

model = dict(
    freeze_vlm_backbone=True,
    freeze_llm_expert=True,
    use_lora=True,
    lora_rank=8,
    lora_dropout=0.0,
    lora_target_modules=['q_proj', 'v_proj', 'k_proj', 'o_proj', 'state_proj.projector',
                         'action_in_proj.projector', 'action_out_proj.projector'])

runner = dict(type='DDPTrainRunner', learning_rate=5e-3, save_epoch_interval=1)
