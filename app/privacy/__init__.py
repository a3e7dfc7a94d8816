"""Data-subject rights: subject access (Art. 15) and erasure (Art. 17) over the packages' privacy hooks."""
