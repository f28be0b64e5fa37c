# π0.5 full finetune on LIBERO-10 (FluxVLA's LIBERO guide config; paths are placeholders).
# Differences from π0 (see vla/models/pi05.py): adaRMS time conditioning in the expert, state as discrete
# prompt tokens. So the time MLP is proj_width -> proj_width and the openpi names are time_mlp_in/out; the
# guide's state_proj stays for its config surface (its in_dim is the state size) and holds no weights.
# Data, runner and eval are shared with the other PaliGemma config: configs/_base_/paligemma_libero_10.py.
_base_ = ['../_base_/paligemma_libero_10.py']

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
