"""Attention from first principles: the notes the project grew from, as small, tested NumPy/SymPy/Keras modules."""
