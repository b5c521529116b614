"""The semi-supervised methods: what an unlabeled batch teaches (params.yaml `ssl.method`).

A method is one module of this package, named as the method, holding a class `Method` (a subclass of
fewlabels.methods.base.Method): its running state, which the resume checkpoint saves, and its loss on an
unlabeled batch. Plus one line of fewlabels.registry.METHODS, what the params schema knows of it without
importing torch or the method: its meaning for the params table and the settings it needs. A method module
imports nothing of another method (shared code lives in base.py), so dvc.yaml's train stage depends on
fewlabels/methods/${ssl.method}.py alone. Adding a method is a module and a line there; tests/test_methods.py
runs every method through the same checks (it trains, never sees a hidden label, resumes exactly).
"""
