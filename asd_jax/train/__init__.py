"""The ensemble trainer shared by every window-based model."""
