"""What every part of jointdiff may use: where things are, typed configs, image files, tiny models, seeds.

These modules import nothing else of jointdiff (tests/test_architecture.py checks it).
"""
