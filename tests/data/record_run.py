"""A slow command for the at-most-once test: notes each run in a file, then sleeps."""

import os
import sys
import time

with open(sys.argv[1], "a") as runs:
    runs.write(f"{os.getpid()}\n")
time.sleep(float(sys.argv[2]))
