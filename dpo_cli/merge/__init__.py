"""`dpo merge-adapter`: fold a LoRA adapter into its base model, verify the logits, and publish the
merged model directory (`runner`)."""
