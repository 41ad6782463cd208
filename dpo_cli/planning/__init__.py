"""Know before launch: memory and compute estimates (`dpo plan`) and stack checks (`dpo doctor`).

Nothing here imports torch or loads weights at import time; `doctor` imports the libraries it
reports on inside its functions.
"""
