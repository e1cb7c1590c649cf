"""Tasks: turn an image or video into an objective for the core solver, and back.

Pure torch, like the core: no file or terminal I/O.
"""
