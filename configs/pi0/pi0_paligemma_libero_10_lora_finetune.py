# π0 LoRA finetune on LIBERO-10: VLM and expert frozen, LoRA on attention and the state/action projectors.
_base_ = './pi0_paligemma_libero_10_full_finetune_pytorch.py'

model = dict(
    freeze_vlm_backbone=True,
    freeze_llm_expert=True,
    use_lora=True,
    lora_rank=32,
    lora_dropout=0.0,
    lora_target_modules=['q_proj', 'v_proj', 'k_proj', 'o_proj', 'state_proj.projector',
                         'action_in_proj.projector', 'action_out_proj.projector'])

runner = dict(
    type='DDPTrainRunner',
    learning_rate=0.0005,
    max_epochs=18,
    save_epoch_interval=1)
