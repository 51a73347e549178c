"""Bridges between ptcore and other libraries' models and trainers. Each is an optional
extra (``pip install 'ptcore[hf]'`` for :mod:`ptcore.integrations.hf`) imported only on use."""
