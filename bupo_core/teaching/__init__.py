"""Teaching code: the notebooks' exercise checkers, the interactive lens widgets and the end-to-end
demo (``bupo demo``). Nothing in the algorithm modules imports from here.
"""
