"""Labels as text: label-set YAML (labelset), tokenizers, and the label embeddings a text
tower makes of them, found in a bundle or the user cache or computed here (embeddings)."""
