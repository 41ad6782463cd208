"""`dpo generate-pairs`: sample responses from a model, score them, and pair clear winners with losers."""
