"""Reference-making code: tiny random-weight pipelines built, saved and run by diffusers (PyTorch, CPU).

Only this package imports torch/diffusers; reference values come only from it.
"""
