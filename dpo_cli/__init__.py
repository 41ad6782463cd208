"""dpo: one YAML file to a preference-optimization run on top of Hugging Face TRL."""

__version__ = "0.1.0"
