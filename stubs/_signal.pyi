# The launch path imports _signal (the C module behind signal) to skip signal.py's enum
# set-up at start-up; typeshed has no stub for it, and it exports the same names.
from signal import *
