"""`dpo eval`: did the trained model learn the preference, does it win, and what did it break?

Modules, one concept each:

- `preference`: implicit-reward metrics on the held-out pairs, through TRL's own `evaluate`.
- `generate`: seeded, batched, chat-templated generations from policy and reference, cached.
- `pathology`: pure checks of generations (length, sycophancy, evasion, repetition, degeneration).
- `judges`: OpenAI-compatible endpoint, local reward model and local causal-LM judges.
- `winrate`: position-swapped pairwise judging and win/tie/loss with Wilson intervals.
- `report`: JSON, Markdown and PNG plots, written atomically; one side-by-side report for several runs.
- `runner`: the library function the CLI calls.
"""
