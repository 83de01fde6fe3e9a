from matscale.systems.spin import CurieWeiss, Ising2D
from matscale.systems.spde import PredatorPrey

__all__ = ["CurieWeiss", "Ising2D", "PredatorPrey"]
