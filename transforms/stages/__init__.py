"""Analysis stages: one file per stage, each a ``Stage`` (transforms/base.py) with its declared contract; profile
variants of one stage are named for their model (``classify_yamnet``/``classify_ast``) or profile
(``samples_lite``/``samples_full``).
"""
