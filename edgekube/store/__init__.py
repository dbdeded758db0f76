"""The store: an LMDB revision log (kine's model) with a memory tier and a watch hub."""
