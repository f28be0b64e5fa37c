# The LIBERO-10 evaluation settings the full configs share (FluxVLA's LIBERO guide: 评测). Each model
# config adds its `dataset.transforms` (how the server turns an observation into model inputs).
eval = dict(
    type='LiberoEvalRunner',
    task_suite_name='libero_10',
    model_family='pi0',
    eval_chunk_size=10,
    resize_size=224,
    num_trials_per_task=50,
    num_steps_wait=10,
    seed=7,
    dataset=dict(type='LiberoParquetEvalDataset'),
    denormalize_action=dict(type='DenormalizeLiberoAction', use_quantiles=False))
