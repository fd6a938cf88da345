"""Attention from first principles: the seed notes as small, tested NumPy/SymPy/Keras modules."""
