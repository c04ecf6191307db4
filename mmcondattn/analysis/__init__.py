"""Analysis behind the tools in ``tools/analysis_tools/``, one module per idea.

=====================  ===================================================================
module                 what
=====================  ===================================================================
``presets``            the named method presets (baseline, precond, spectral, tokens, all)
``logs``               reading mmengine's ``vis_data/scalars.json``
``timing``             paired timings of twin models and their memory peaks
``benchmark``          speed and memory of conditioned models against their twins
``condition_report``   condition numbers per layer (models, checkpoints) and over training
``study``              the small-scale training study
``report``             markdown pages with generated parts, command lines, plotting
``model_zoo``          model-zoo checkpoints evaluated against their metafiles
``gpu_check``          the checks that need a GPU, in one report (a CPU dry run too)
=====================  ===================================================================

The analyses that build models from the OpenMMLab registries import :mod:`mmcondattn.openmmlab`
(``condition_report``, ``study``, ``model_zoo`` on import; ``benchmark`` and ``gpu_check`` when
they build an OpenMMLab model): their timm modes (``models='timm'``) need torch and timm alone.
matplotlib is imported only where a plot is drawn (``pip install matplotlib``).
"""
