"""The PRM reward service for RL trainers and tools: ``dreamprm-code serve`` (FastAPI + uvicorn).

``service.make_app`` builds the app around any scorer (``prm.score.Scorer``), ``service.serve``
runs it on a checkpoint, ``service.ServerThread`` runs an app in a background thread.
"""
