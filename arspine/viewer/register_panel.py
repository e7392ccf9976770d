"""register panel (being wired)."""

__all__ = ["RegisterPanel"]


def RegisterPanel(window):
    raise ImportError("not wired yet")
