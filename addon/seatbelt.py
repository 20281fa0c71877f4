"""Old entry path, kept for `-s addon/seatbelt.py`; the addon is seatbelt/addon.py."""
import os  # noqa: E401
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from seatbelt.addon import addons  # noqa: E402,F401
