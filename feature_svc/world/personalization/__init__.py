"""The personalization world (seed 001's second model family): users, items, categories and sessions with a
clickstream of views, add-to-carts and purchases (`world.py`), and the user, item and session features computed
from it (`features.py`). Numpy only: the trainer, the feature loader and the tests share it."""
