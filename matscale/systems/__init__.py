from matscale.systems.spin import CurieWeiss, Ising2D

__all__ = ["CurieWeiss", "Ising2D"]
