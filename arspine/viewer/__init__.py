"""The PyQt5 + VTK surgeon rehearsal viewer (``arspine view``). Imports PyQt5 lazily."""

__all__: list[str] = []
