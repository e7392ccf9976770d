"""rehearse panel (being wired)."""

__all__ = ["RehearsePanel"]


def RehearsePanel(window):
    raise ImportError("not wired yet")
