"""SemanticAC in PyTorch: config.py (ModelConfig, the schema of configs/model/*.yaml) ->
semanticac.py (build_model: audio tower + head + text tower), the towers (htsat, yamnet,
text_clip, text_minilm), the heads (cscm, heads), loss.py, and the weight loaders (weights,
clip_weights)."""
