"""Know before launch: memory and compute estimates (`dpo plan`).

Nothing here imports torch or loads weights at import time. The stack checks of `dpo doctor`
live in the core (`dpo_cli.doctor`): training's preflight uses them too.
"""
