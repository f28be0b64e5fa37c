# π0 full finetune on LIBERO-10 (FluxVLA's LIBERO guide config; paths are placeholders).
# PaliGemma-3B-pt-224 + gemma_300m action expert, sizes as openpi models/gemma.py.
# Data, runner and eval are shared with the other PaliGemma config: configs/_base_/paligemma_libero_10.py.
_base_ = ['../_base_/paligemma_libero_10.py']

model = dict(
    type='PI0FlowMatching',
    vlm_backbone=dict(
        type='PaliGemma',
        vlm_backbone_id='paligemma_3b_pt_224',
        vlm_config=dict()),  # the preset is PaliGemma-3B-pt-224; override keys here
    proj_width=1024,
    n_action_steps=10,
    # openpi's π0 pads state and actions to 32 inside the model (state_proj 32 -> 1024, action_in_proj
    # 32 -> 1024, action_out_proj 1024 -> 32); the data's widths are state_dim 8 and action_dim 7: inputs are
    # zero-padded and outputs cut back at the model's edge, so the released weights compute as released.
    state_dim=8,
    action_dim=7,
    max_state_dim=32,
    max_action_dim=32,
    state_proj=dict(type='LinearProjector', in_dim=32, out_dim=1024),
    action_in_proj=dict(type='LinearProjector', in_dim=32, out_dim=1024),
    action_out_proj=dict(type='LinearProjector', in_dim=1024, out_dim=32),
    action_time_mlp_in=dict(type='LinearProjector', in_dim=2048, out_dim=1024),
    action_time_mlp_out=dict(type='LinearProjector', in_dim=1024, out_dim=1024),
    llm_expert=dict(
        type='GemmaLLMBackbone',
        llm_backbone_id='gemma-2b_causal',
        llm_family='gemma',
        # gemma_300m: the action expert's width/MLP; heads, head_dim and depth equal PaliGemma's
        llm_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=18,
                        num_attention_heads=8, num_key_value_heads=1, head_dim=256)),
    freeze_vlm_backbone=False,
    freeze_llm_expert=False,
    num_inference_steps=10,
    pretrained_name_or_path=
    '/path/to/cache/openpi/openpi-assets/checkpoints/pi0_libero_pytorch/model.safetensors',
    name_mapping={
        'vlm_backbone.vlm.model.language_model':
        'model.paligemma_with_expert.paligemma.model.language_model',
        'vlm_backbone.vlm.model.vision_tower':
        'model.paligemma_with_expert.paligemma.model.vision_tower',
        'vlm_backbone.vlm.model.multi_modal_projector':
        'model.paligemma_with_expert.paligemma.model.multi_modal_projector',
        'action_time_mlp_in.projector': 'model.action_time_mlp_in',
        'action_time_mlp_out.projector': 'model.action_time_mlp_out',
        'llm_expert.llm.model':
        'model.paligemma_with_expert.gemma_expert.model',
        'state_proj.projector': 'model.state_proj',
        'action_in_proj.projector': 'model.action_in_proj',
        'action_out_proj.projector': 'model.action_out_proj'
    })
